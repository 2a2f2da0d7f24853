"""City-file loader: good files load into the hierarchy; bad ones fail naming entry, field, line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from citybrain.city import city_from_dict, load_city
from citybrain.citygen import make_city
from citybrain.exceptions import CityFileError

TINY = Path(__file__).parent / "data" / "tiny_city.yaml"


def test_tiny_city_loads_with_hierarchy_and_placement():
    city = load_city(TINY)
    assert city.name == "Tiny City"
    assert len(city.grids) == 4
    # placed by point-in-polygon when no area is given
    assert city.devices["wl-0001"].area == "G1"
    assert city.devices["gs-0001"].area == "G4"
    # explicit area is kept
    assert city.devices["aq-0007"].area == "G2"
    assert city.devices["aq-0007"].limit("warning") == 75
    assert [a.id for a in city.chain("G3")] == ["G3", "D1-S1-C1", "D1-S1", "D1"]
    assert city.district_of("G3") == "D1"
    assert city.neighbours["G1"] == {"G2", "G3", "G4"}  # corners touch too
    assert city.devices["cam-0042"].zones == ("crossing", "gate")
    assert city.units["FIRE-07"].type == "fire"
    # unknown kinds are accepted (judged by the generic detectors)
    assert city.devices["xx-0001"].kind == "radiation"


def test_json_and_yaml_give_the_same_city(tmp_path):
    import yaml

    raw = yaml.safe_load(TINY.read_text())
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(raw))
    a, b = load_city(TINY), load_city(p)
    assert a.devices == b.devices and a.areas == b.areas and a.units == b.units


def test_bundled_demo_city_shape(demo_city):
    c = demo_city
    assert len(c.by_level("district")) >= 5
    assert 200 <= len(c.grids) <= 1000
    sensors = list(c.sensors())
    assert 1800 <= len(sensors) <= 2500
    assert 250 <= sum(1 for _ in c.cameras()) <= 400
    assert {u.type for u in c.units.values()} == {"fire", "police", "medical", "rescue", "utility", "grid_worker"}
    assert {d.kind for d in sensors} >= {"water_level", "rainfall", "pm25", "noise", "temperature", "smoke", "gas",
                                         "traffic_speed", "traffic_flow", "occupancy", "power", "vibration"}
    # every grid has a full chain up to a district; Shenzhen coordinates
    for g in c.grids[:50]:
        assert [a.level for a in c.chain(g.id)] == ["grid", "community", "street", "district"]
    x0, y0, x1, y1 = c.bounds
    assert 113.7 < x0 < x1 < 114.4 and 22.4 < y0 < y1 < 22.8


def test_generator_is_deterministic_and_scales():
    assert make_city(seed=3) == make_city(seed=3)
    big = city_from_dict(make_city(grids=2000, sensors=3000, cameras=100))
    assert len(big.grids) >= 2000
    assert all(d.area for d in big.devices.values())


def _raw():
    import yaml

    return yaml.safe_load(TINY.read_text())


def _mutate(fn):
    raw = copy.deepcopy(_raw())
    fn(raw)
    return raw


BAD = {
    "duplicate area id": (lambda r: r["areas"].append(dict(r["areas"][3])), "duplicate id 'G1'"),
    "duplicate device id": (lambda r: r["devices"].append(dict(r["devices"][0])), "duplicate id 'wl-0001'"),
    "unknown parent": (lambda r: r["areas"][3].update(parent="NOPE"), "unknown parent 'NOPE'"),
    "wrong parent level": (lambda r: r["areas"][3].update(parent="D1"), "must be a community"),
    "district with parent": (lambda r: r["areas"][0].update(parent="X"), "a district has no parent"),
    "bad level": (lambda r: r["areas"][3].update(level="block"), "'block' is not one of"),
    "grid outside parent": (lambda r: r["areas"][3].update(polygon=[[114.0, 22.5], [114.2, 22.5], [114.2, 22.6]]),
                            "lies outside its parent 'D1-S1-C1'"),
    "device outside every grid": (lambda r: r["devices"][0].update(location=[100.0, 10.0]), "outside every grid"),
    "lat/lon swapped": (lambda r: r["devices"][0].update(location=[22.51, 114.01]), "swapped?"),
    "bad coordinates": (lambda r: r["devices"][0].update(location=[114.0, 95.0]), "is not a WGS84"),
    "non-numeric location": (lambda r: r["devices"][0].update(location=["a", 1]), "must be [lon, lat] numbers"),
    "unit mismatch": (lambda r: r["devices"][0].update(unit="cm"), "does not fit kind 'water_level'"),
    "unknown device area": (lambda r: r["devices"][0].update(area="G9"), "unknown area 'G9'"),
    "device in a street": (lambda r: r["devices"][0].update(area="D1-S1"), "a device belongs to a grid"),
    "bad limits": (lambda r: r["devices"][0].update(limits={"warning": "high"}), "must map names"),
    "bad unit type": (lambda r: r["units"][0].update(type="navy"), "'navy' is not one of"),
    "missing name": (lambda r: r.pop("name"), "must be a non-empty string"),
    "areas not a list": (lambda r: r.update(areas={}), "must be a list"),
    "short polygon": (lambda r: r["areas"][4].update(polygon=[[114.0, 22.5], [114.1, 22.5]]), "at least 3"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_city_is_rejected_with_a_specific_message(case):
    fn, expected = BAD[case]
    with pytest.raises(CityFileError) as e:
        city_from_dict(_mutate(fn))
    assert expected in str(e.value)


def test_yaml_errors_name_the_line(tmp_path):
    text = TINY.read_text().replace("{id: FIRE-07, type: fire", "{id: FIRE-07, type: firetruck")
    p = tmp_path / "c.yaml"
    p.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "firetruck" in ln)
    with pytest.raises(CityFileError) as e:
        load_city(p)
    assert f"at line {line}" in str(e.value)
    assert "units[0] (id 'FIRE-07')" in str(e.value) and "'type'" in str(e.value)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(CityFileError, match="cannot read"):
        load_city(tmp_path / "missing.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(CityFileError, match="not valid YAML"):
        load_city(p)


def test_vectorised_placement_matches_brute_force_on_irregular_polygons():
    import numpy as np

    from citybrain import geo

    rng = np.random.default_rng(5)
    polys = []
    for _ in range(300):  # triangles, quads and hexagons of varying sizes, overlapping
        cx, cy, r = rng.uniform(0, 10), rng.uniform(0, 10), rng.uniform(0.05, 1.5)
        k = int(rng.choice([3, 4, 6]))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        polys.append(np.c_[cx + r * np.cos(ang), cy + r * np.sin(ang)])
    px, py = rng.uniform(-1, 11, 3000), rng.uniform(-1, 11, 3000)
    got = geo.assign_points(px, py, polys)
    brute = np.full(len(px), -1)
    for i in range(len(polys) - 1, -1, -1):  # lowest index wins
        brute[geo.points_in_polygon(px, py, polys[i])] = i
    assert (got == brute).all()
    assert (got >= 0).sum() > 500  # the test exercises real hits
