"""The dataset registry (ablate.data.registry): every named dataset's facts in one place, and every module that
knows a dataset fact reading it from there."""
import pytest

from ablate.analysis import context
from ablate.analysis.text import methods
from ablate.analysis.text.references import ENTRIES
from ablate.data import readers
from ablate.data.registry import DATASETS, NAMED, REGISTRY, may_mirror, no_flip
from ablate.errors import AblateError
from ablate.spec.trial_config import TrialConfig
from ablate.train.trial_files import dataset_title


def test_every_named_dataset_has_a_reader_files_and_citable_works():
    assert NAMED == ("auto", *REGISTRY) and DATASETS[-1] == "folder:PATH"
    for name, d in REGISTRY.items():
        assert d.reader in (*readers.READERS, "digits"), name
        assert d.cite and all(key in ENTRIES for key in d.cite), name
        assert d.classes >= 2 and d.channels in (1, 3) and d.image_size >= 8 and d.train_images > d.test_images > 0
        if d.reader != "digits":
            source = readers.SOURCES[name]
            assert source.title == d.title and len(source.most) == len(source.files)
            files_per_image = 2 if d.reader == "idx" else 1  # an IDX split is an image file and a label file
            assert sum(source.most) == files_per_image * (d.train_images + d.test_images), name
    assert readers.SOURCES["cifar10"].most == (10_000,) * 6 and readers.SOURCES["cifar100"].most == (50_000, 10_000)


def test_the_shape_a_dataset_gives_the_model_comes_from_the_registry():
    for name, d in REGISTRY.items():
        assert readers.expected_shape(name) == (d.channels, d.classes)
    assert readers.expected_shape("auto") == (1, 10)


def test_reports_and_figures_read_titles_details_classes_and_citations_from_the_registry():
    for name, d in REGISTRY.items():
        assert context.DATASET_NAMES[name] == d.title and context.DATASET_DETAILS[name] == d.details
    assert dataset_title("digits") == "scikit-learn digits (8×8)" and dataset_title("cifar100") == "CIFAR-100 (32×32)"
    assert dataset_title("folder:/data/x") == "folder:/data/x"
    assert not hasattr(methods, "DATASET_KEYS") and not hasattr(context, "DATASET_CLASSES")


def test_crop_flip_is_refused_on_what_may_not_be_mirrored_with_the_same_message():
    assert no_flip() == ("auto", "mnist", "digits", "kmnist")
    for name in NAMED:
        if may_mirror(name):
            assert TrialConfig(dataset=name, augment="crop-flip").augment == "crop-flip"
        else:
            with pytest.raises(AblateError) as info:
                TrialConfig(dataset=name, augment="crop-flip")
            assert str(info.value) == (f"augment crop-flip mirrors images, and a mirrored digit or character is not the "
                                       f"same class; use augment crop (or none) with dataset {name}")
    assert TrialConfig(dataset="folder:/x", augment="crop-flip").augment == "crop-flip"  # the user's images, the user's call
