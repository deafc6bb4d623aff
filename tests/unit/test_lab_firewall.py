from __future__ import annotations

from deploykit.lab.firewall import PartitionRules, render_removal, render_ruleset, table_name


def test_table_name_is_an_nft_identifier() -> None:
    assert table_name("chirp-lab") == "dklab_chirp_lab"


def test_ruleset_without_partitions_only_routes_between_lab_bridges() -> None:
    text = render_ruleset("chirp-lab", [])
    assert text.startswith("table inet dklab_chirp_lab {}\ndelete table inet dklab_chirp_lab\n")
    assert (
        '    iifname "dklab*" oifname "dklab*" ip saddr 10.77.0.0/16 ip daddr 10.77.0.0/16 accept\n'
        '    iifname "dklab*" drop\n'
        '    oifname "dklab*" drop\n'
    ) in text
    assert '    iifname "dklab*" ip daddr 10.77.0.0/16 accept\n' in text
    assert "table bridge dklab_chirp_lab {}\ndelete table bridge dklab_chirp_lab\n" in text
    assert "@p0" not in text


def test_partition_rules_cut_the_group_ports_except_allowed_addresses() -> None:
    text = render_ruleset(
        "lab",
        [PartitionRules(ports=("vb-a-1", "vb-a-2"), allowed=("10.77.1.1", "10.77.1.11", "10.77.1.12"))],
    )
    bridge = text[text.index("table bridge dklab_lab {\n") :]
    assert bridge == (
        "table bridge dklab_lab {\n"
        '  set p0_ports { type ifname; elements = { "vb-a-1", "vb-a-2" }; }\n'
        "  set p0_allowed { type ipv4_addr; elements = { 10.77.1.1, 10.77.1.11, 10.77.1.12 }; }\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        "    iifname @p0_ports oifname != @p0_ports drop\n"
        "    oifname @p0_ports iifname != @p0_ports drop\n"
        "  }\n"
        "  chain input {\n"
        "    type filter hook input priority 0; policy accept;\n"
        "    iifname @p0_ports ip daddr != @p0_allowed drop\n"
        "    iifname @p0_ports meta protocol != { ip, arp } drop\n"
        "  }\n"
        "  chain output {\n"
        "    type filter hook output priority 0; policy accept;\n"
        "    oifname @p0_ports ip saddr != @p0_allowed drop\n"
        "    oifname @p0_ports meta protocol != { ip, arp } drop\n"
        "  }\n"
        "}\n"
    )


def test_removal_tolerates_missing_tables() -> None:
    assert render_removal("lab") == (
        "table inet dklab_lab {}\ndelete table inet dklab_lab\n"
        "table bridge dklab_lab {}\ndelete table bridge dklab_lab\n"
    )
