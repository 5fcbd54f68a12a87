from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from qbox.agent.network.fake import FakeNetwork
from qbox.agent.network.records import NetworkRecord, RecordStore


def test_records_round_trip_and_unreadable_ones_are_listed(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "network")
    record = NetworkRecord("sb_aaaaaaaa", 1, "10.213.0.4/30", "qb-1", "/run/netns/qbox-sb_aaaaaaaa",
                           internet=False)
    store.save(record)
    path = store.write_resolv_conf(record.sandbox_id, "nameserver 192.0.2.53\n")
    assert path.read_text() == "nameserver 192.0.2.53\n" and oct(path.stat().st_mode)[-3:] == "644"
    (tmp_path / "network" / "sb_broken0").mkdir()
    assert list(store) == [("sb_aaaaaaaa", record), ("sb_broken0", None)]
    assert record.address == IPv4Address("10.213.0.6") and record.lease.gateway == IPv4Address(
        "10.213.0.5")
    store.remove(record.sandbox_id)
    assert not store.path(record.sandbox_id).exists()


async def test_fake_network_hands_out_and_takes_back_addresses(tmp_path: Path) -> None:
    network = FakeNetwork(tmp_path / "network")
    first = await network.attach("sb_aaaaaaaa", internet=True)
    again = await network.attach("sb_aaaaaaaa", internet=True)
    second = await network.attach("sb_bbbbbbbb", internet=False)
    assert first == again and first.address == "10.213.0.2" and second.address == "10.213.0.6"
    assert first.resolv_conf is not None and first.resolv_conf.is_file()
    await network.detach("sb_aaaaaaaa")
    await network.detach("sb_aaaaaaaa")
    assert network.get("sb_aaaaaaaa") is None and not first.resolv_conf.exists()
    assert await network.start({"sb_bbbbbbbb"}) == {"sb_bbbbbbbb": second}
