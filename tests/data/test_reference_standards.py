from ultrasound_transfer.data.reference_standards import REFERENCE_STANDARDS, reference_standard


def test_a_dataset_of_ones_own_shows_the_declared_reference_standard_or_asks_for_it():
    assert reference_standard("ddti") == REFERENCE_STANDARDS["ddti"]
    assert reference_standard("clinic", "histopathology of core biopsy") == "histopathology of core biopsy"
    assert "download.clinic.reference_standard" in reference_standard("clinic")
