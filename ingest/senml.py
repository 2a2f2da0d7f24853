"""SenML (RFC 8428) resolution: base values applied, relative times made absolute.

A pure function, tested against the RFC's worked examples. Values of ``t`` below 2**28 are
relative to ``now`` (RFC 8428 section 4.5.3).
"""

from __future__ import annotations

import math
from typing import Any

from citybrain.exceptions import RejectedMessage

RELATIVE_LIMIT = 2**28
_KNOWN = frozenset({"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"})
_RECORD_FIELDS = frozenset({"n", "v", "vs", "vb", "vd", "s", "t", "u"})  # a record of more than base fields
_VALUE_FIELDS = ("v", "vs", "vb", "vd")
_RESOLVED_VALUES = frozenset({"v", "vs", "vb", "vd", "s"})
_NUM = (int, float)


def _num(rec: dict, key: str, default: float | None = None) -> float | None:
    v = rec.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, _NUM):
        raise RejectedMessage("wrong_type", f"SenML field {key!r} must be a number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise RejectedMessage("nan_value", f"SenML field {key!r} is {v}")
    return float(v)


def _str(rec: dict, key: str) -> str | None:
    v = rec.get(key)
    if v is not None and not isinstance(v, str):
        raise RejectedMessage("wrong_type", f"SenML field {key!r} must be a string, got {type(v).__name__}")
    return v


def resolve_senml(pack: Any, now: float) -> list[dict]:
    """Resolve a SenML pack into records with ``n``, ``t`` and ``u``/``v``/``vs``/``vb``/``vd``/``s``."""
    if not isinstance(pack, list) or not pack:
        raise RejectedMessage("bad_senml", "a SenML pack is a non-empty JSON array of records")
    bn, bt, bu, bv, bs = "", 0.0, None, 0.0, 0.0
    out: list[dict] = []
    for i, rec in enumerate(pack):
        if not isinstance(rec, dict):
            raise RejectedMessage("bad_senml", f"record {i} is not an object")
        if "bver" in rec and (isinstance(rec["bver"], bool) or not isinstance(rec["bver"], int)):
            raise RejectedMessage("wrong_type", "SenML field 'bver' must be an integer")
        if "bn" in rec:
            bn = _str(rec, "bn") or ""
        if "bt" in rec:
            bt = _num(rec, "bt") or 0.0
        if "bu" in rec:
            bu = _str(rec, "bu")
        if "bv" in rec:
            bv = _num(rec, "bv") or 0.0
        if "bs" in rec:
            bs = _num(rec, "bs") or 0.0
        extra = rec.keys() - _KNOWN  # extensions (no known field ends with "_")
        if extra:
            must_understand = [k for k in rec if k in extra and isinstance(k, str) and k.endswith("_")]
            if must_understand:
                raise RejectedMessage("bad_senml", f"record {i} has must-understand fields {must_understand}")
        if rec.keys().isdisjoint(_RECORD_FIELDS):
            continue  # a record of base fields only (RFC 8428 example 9)
        name = bn + (_str(rec, "n") or "")
        if not name:
            raise RejectedMessage("bad_senml", f"record {i} has no name (n or bn)")
        t = bt + (_num(rec, "t", 0.0) or 0.0)
        if t < RELATIVE_LIMIT:
            t = now + t
        r: dict = {k: v for k, v in rec.items() if k in extra} if extra else {}  # extensions such as "l"
        r["n"] = name
        u = _str(rec, "u") if "u" in rec else bu
        if u is not None:
            r["u"] = u
        r["t"] = t
        values = [k for k in _VALUE_FIELDS if k in rec]
        if len(values) > 1:
            raise RejectedMessage("bad_senml", f"record {i} has more than one value field: {values}")
        if "v" in rec:
            r["v"] = bv + _num(rec, "v")  # type: ignore[operator]
        elif "bv" in rec and "s" not in rec and not values:
            r["v"] = bv
        if "vs" in rec:
            r["vs"] = _str(rec, "vs")
        if "vb" in rec:
            if not isinstance(rec["vb"], bool):
                raise RejectedMessage("wrong_type", "SenML field 'vb' must be a boolean")
            r["vb"] = rec["vb"]
        if "vd" in rec:
            r["vd"] = _str(rec, "vd")
        if "s" in rec:
            r["s"] = bs + _num(rec, "s")  # type: ignore[operator]
        if r.keys().isdisjoint(_RESOLVED_VALUES):
            raise RejectedMessage("bad_senml", f"record {i} ({name}) has no value")
        out.append(r)
    if not out:
        raise RejectedMessage("bad_senml", "the pack has no records with values")
    return out
