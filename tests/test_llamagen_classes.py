"""The ImageNet class names a class-conditional LlamaGen model is picked by."""

from studio.engines.llamagen.classes import NULL_CLASS, class_names


def test_a_name_for_every_class_in_index_order():
    names = class_names()
    assert len(names) == NULL_CLASS == 1000 and all(names)
    assert names[0] == "tench" and names[1] == "goldfish" and names[207] == "golden retriever"
    assert names[999] == "toilet tissue"
    assert names[134] == names[517] == "crane"  # ImageNet's own duplicate, kept apart by index
