"""CAP 1.2 (OASIS Common Alerting Protocol) messages for incidents and unit dispatches.

Element order follows the schema (xs:sequence), times use CAP's form (no ``Z``, no fraction).
Dispatches are ``scope=Private`` addressed to the unit; updates and cancels reference the
first dispatch message (``sender,identifier,sent``).
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from citybrain.city import City
from citybrain.clock import iso
from citybrain.records import Incident

NS = "urn:oasis:names:tc:emergency:cap:1.2"
SENDER = "citybrain@command-center"


def _el(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    e = ET.SubElement(parent, f"{{{NS}}}{tag}")
    if text is not None:
        e.text = text
    return e


def identifier(incident_id: str, kind: str, seq: int) -> str:
    return f"citybrain.{incident_id}.{kind}.{seq}"


def build(inc: Incident, city: City, *, ident: str, sent: float, msg_type: str = "Alert",
          scope: str = "Public", addresses: str | None = None, references: list[tuple[str, float]] = (),
          note: str | None = None, instruction: str | None = None, response: str = "Monitor") -> str:
    ET.register_namespace("", NS)
    root = ET.Element(f"{{{NS}}}alert")
    _el(root, "identifier", ident)
    _el(root, "sender", SENDER)
    _el(root, "sent", iso(sent))
    _el(root, "status", "Actual")
    _el(root, "msgType", msg_type)
    _el(root, "source", "citybrain")
    _el(root, "scope", scope)
    if addresses:
        _el(root, "addresses", addresses)
    if note:
        _el(root, "note", note)
    if references:
        _el(root, "references", " ".join(f"{SENDER},{i},{iso(t)}" for i, t in references))
    _el(root, "incidents", inc.id)
    info = _el(root, "info")
    _el(info, "language", "en-US")
    _el(info, "category", inc.category)
    _el(info, "event", inc.event.replace("_", " "))
    _el(info, "responseType", response)
    _el(info, "urgency", inc.urgency)
    _el(info, "severity", inc.severity)
    _el(info, "certainty", inc.certainty)
    _el(info, "eventCode")
    code = info[-1]
    _el(code, "valueName", "citybrain-event")
    _el(code, "value", inc.event)
    _el(info, "onset", iso(inc.started_at))
    _el(info, "senderName", "citybrain command center")
    _el(info, "headline", (inc.title or f"{inc.event} in {inc.area}")[:160])
    lines = [f"{e.source} ({e.source_kind}) {e.detail or e.value}" for e in inc.evidence[:10]]
    _el(info, "description", "; ".join(lines) or inc.event)
    if instruction:
        _el(info, "instruction", instruction)
    for key, val in (("incident-state", inc.state), ("district", inc.district), ("grid", inc.area)):
        p = _el(info, "parameter")
        _el(p, "valueName", key)
        _el(p, "value", val)
    area = _el(info, "area")
    names = [a.name for a in city.chain(inc.area)][::-1]
    _el(area, "areaDesc", " > ".join(names) or inc.area)
    grid = city.areas.get(inc.area)
    if grid is not None and len(grid.polygon) >= 3:
        ring = list(grid.polygon) + [grid.polygon[0]]
        _el(area, "polygon", " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat in ring))
    lon, lat = inc.location
    _el(area, "circle", f"{lat:.6f},{lon:.6f} 0.2")
    return ET.tostring(root, encoding="unicode", xml_declaration=False)
