import torch

from deepinterestgr.quantize.analysis import purity, sid_label_information


def test_purity_hand_computed():
    clusters = torch.tensor([0, 0, 0, 1, 1, 2])
    labels = torch.tensor([1, 1, 0, 2, 2, 0])
    assert purity(clusters, labels) == 5 / 6


def test_information_is_one_for_codes_that_are_the_labels_and_low_for_noise():
    labels = torch.arange(8).repeat_interleave(50)
    perfect = torch.stack([labels, torch.randint(0, 4, (400,))], dim=1)
    info = sid_label_information(perfect, labels)
    assert info["purity@L1"] == 1.0 and abs(info["nmi@L1"] - 1.0) < 1e-6
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 8, (400, 2), generator=g)
    noisy = sid_label_information(noise, labels)
    assert noisy["nmi@L1"] < 0.1 and noisy["purity@L1"] < 0.35
