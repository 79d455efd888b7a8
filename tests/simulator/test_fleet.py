from schemas.topics import SENSOR_MODE
from simulator.fleet import SEED_MACS, TEMPLATES, generate_fleet, seed_fleet


def test_seed_fleet_is_spec_section_5():
    fleet = seed_fleet()
    assert fleet.macs == list(SEED_MACS)
    for controller in fleet.controllers:
        wiring = {(k.number, s.pin): s.model for k in controller.connectors for s in k.sensors}
        assert wiring == {(1, 1): "ENV-S1", (2, 2): "PM-100", (4, 3): "ENV-S1"}
        assert controller.serial == f"F2-{controller.mac}"


def test_generation_is_deterministic_and_seeded():
    assert generate_fleet(40, seed=3) == generate_fleet(40, seed=3)
    assert generate_fleet(40, seed=3).macs != generate_fleet(40, seed=4).macs
    assert generate_fleet(10, seed=3).macs == generate_fleet(40, seed=3).macs[:10]


def test_generated_fleet_shape():
    fleet = generate_fleet(200, seed=1)
    macs = fleet.macs
    assert len(set(macs)) == 200
    assert all(len(m) == 12 and m.startswith("02") for m in macs)
    assert not set(fleet.ghost_macs) & set(macs)
    modes = {k.mode for c in fleet.controllers for k in c.connectors}
    assert len(modes) == 3
    for controller in fleet.controllers:
        assert [k.number for k in controller.connectors] == [1, 2, 3, 4]
        assert any(k.mode == SENSOR_MODE and k.sensors for k in controller.connectors)
        for connector in controller.connectors:
            pins = [s.pin for s in connector.sensors]
            assert len(pins) == len(set(pins)) and all(1 <= p <= 6 for p in pins)
            assert all(s.model in TEMPLATES for s in connector.sensors)
