from ultrasound_transfer.data.grouping import merge_groups


def test_cases_and_identical_pixels_join_transitively():
    cases = ["A", "A", "B", "C", "D"]
    hashes = ["h1", "h2", "h2", "h3", "h1"]
    # A-A by case, image 1 ~ image 2 by pixels (B joins), image 0 ~ image 4 by pixels (D joins).
    assert merge_groups(cases, hashes) == ["A", "A", "A", "C", "A"]


def test_distinct_cases_and_pixels_stay_apart():
    assert merge_groups(["x", "y", "z"], ["1", "2", "3"]) == ["x", "y", "z"]


def test_empty_case_does_not_join_images():
    assert merge_groups(["", ""], ["1", "2"]) == ["", ""]
