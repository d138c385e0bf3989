"""Your own topologies and tests, collected only: ``--scenarios`` names a duplicate in both
files, and the DHCP matrix and bench datapaths come from the user's scenarios (the runs, and
the ``linklab_topology`` factory, are in tests/live)."""

from __future__ import annotations

import re
from pathlib import Path

from linklab.model import SHIPPED
from tests import REPO


def test_duplicate_names_across_paths_name_both_files(tmp_path: Path, user_scenarios,
                                                       run_pytest) -> None:
    d = user_scenarios()
    other = tmp_path / "other.toml"
    other.write_text((d / "mine.toml").read_text())
    done = run_pytest(tmp_path, "--co", f"--scenarios={d}", f"--scenarios={other}")
    assert done.returncode != 0
    assert f"{other}: name: 'mine' is also the name of {d / 'mine.toml'}" in done.stderr, \
        done.stderr


def test_dhcp_matrix_and_bench_datapaths_come_from_the_users_scenarios(
        tmp_path: Path, user_scenarios, run_pytest) -> None:
    d = user_scenarios()
    text = (SHIPPED / "dhcp-macvlan.toml").read_text()
    (d / "dhcp-mymac.toml").write_text(text.replace('name = "dhcp-macvlan"',
                                                    'name = "dhcp-mymac"'))
    shipped = (SHIPPED / "dhcp" / "matrix.toml").read_text()
    expect_c = re.search(r"\[expect\.C\]\n.*?\n\n", shipped, re.S).group(0)
    (d / "dhcp").mkdir()
    (d / "dhcp" / "matrix.toml").write_text(
        '[setup.C]\ndescription = "mine"\nclient_ids = { c1 = "none", c2 = "none" }\n'
        f'scenarios = ["dhcp-mymac"]\n\n{expect_c}')
    done = run_pytest(REPO, "--co", "-q", f"--scenarios={d}", f"--results-dir={tmp_path / 'r'}",
                     "tests/live/test_dhcp.py", "bench/test_bench.py", "-k",
                     "test_dhcp[ or test_bench")
    ids = re.findall(r"\[([\w.-]+)\]", done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dhcp-C-mymac-kea-match-client-id-udhcpc" in ids, ids
    assert not [i for i in ids if "dhcp-macvlan" in i or i.startswith("dhcp-A")], ids
    assert {"loopback", "veth-pair", "mine"} <= set(ids), ids
    assert not [i for i in ids if i.startswith("macvlan")], ids
