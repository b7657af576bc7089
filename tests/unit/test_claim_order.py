from chalicelib.adapters.postgres.claim_order import in_given_order


def test_rows_follow_the_ids_given_and_a_duplicate_keeps_its_first_place() -> None:
    rows = [{"id": "c"}, {"id": "a"}, {"id": "b"}]
    assert [r["id"] for r in in_given_order(rows, ["b", "c", "b", "a"])] == ["b", "c", "a"]


def test_an_id_not_asked_for_goes_last() -> None:
    assert [r["id"] for r in in_given_order([{"id": "x"}, {"id": "a"}], ["a"])] == ["a", "x"]
