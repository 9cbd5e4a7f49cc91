from dispatcher.console.render import duration


def test_duration_reads_in_the_largest_whole_unit() -> None:
    assert [duration(s) for s in (604800, 86400, 7200, 300, 90, 45, 0.5)] == [
        "7 d", "1 d", "2 h", "5 min", "90 s", "45 s", "0.5 s"]
