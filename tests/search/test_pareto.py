from shrinktune.search.pareto import dominates, pareto_front

OBJ = {"rouge1": "max", "latency_ms": "min"}


def test_dominance_needs_one_strict_win():
    assert dominates({"rouge1": 0.3, "latency_ms": 10}, {"rouge1": 0.2, "latency_ms": 10}, OBJ)
    assert not dominates({"rouge1": 0.3, "latency_ms": 10}, {"rouge1": 0.3, "latency_ms": 10}, OBJ)
    assert not dominates({"rouge1": 0.3, "latency_ms": 20}, {"rouge1": 0.2, "latency_ms": 10}, OBJ)


def test_front_keeps_trade_offs_and_drops_dominated():
    rows = [
        {"rouge1": 0.30, "latency_ms": 100},  # best quality
        {"rouge1": 0.20, "latency_ms": 40},  # fastest
        {"rouge1": 0.19, "latency_ms": 90},  # dominated by row 1
        {"rouge1": 0.25, "latency_ms": 60},  # trade-off
        {"rouge1": None, "latency_ms": 1},  # failed measurement: skipped
    ]
    assert pareto_front(rows, OBJ) == [0, 1, 3]
