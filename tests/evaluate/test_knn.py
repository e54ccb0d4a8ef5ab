"""kNN against a naive NumPy implementation of the weighted-vote protocol, and invariants."""

import numpy as np
import pytest
import torch

from selfsup.evaluate.knn import knn_accuracies, knn_accuracy, knn_predict, knn_predict_many


def naive_knn(train_x, train_y, test_x, num_classes, k, temperature):
    train = train_x.numpy().astype(np.float64)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    predictions = []
    for x in test_x.numpy().astype(np.float64):
        similarity = train @ (x / np.linalg.norm(x))
        nearest = np.argsort(-similarity)[:k]
        votes = np.zeros(num_classes)
        for index in nearest:
            votes[train_y[index]] += np.exp(similarity[index] / temperature)
        predictions.append(int(np.argmax(votes)))
    return np.array(predictions)


def random_problem(seed, num_train=300, num_test=80, dim=16, num_classes=5):
    generator = torch.Generator().manual_seed(seed)
    train_x = torch.randn(num_train, dim, generator=generator)
    train_y = torch.randint(0, num_classes, (num_train,), generator=generator)
    test_x = torch.randn(num_test, dim, generator=generator)
    return train_x, train_y, test_x


@pytest.mark.parametrize("seed, k, temperature", [(0, 20, 0.07), (1, 200, 0.07), (2, 5, 0.5)])
def test_matches_naive_numpy(seed, k, temperature):
    train_x, train_y, test_x = random_problem(seed)
    predictions = knn_predict(train_x, train_y, test_x, 5, k=k, temperature=temperature)
    assert predictions.dtype == torch.int64
    expected = naive_knn(train_x, train_y.numpy(), test_x, 5, k, temperature)
    np.testing.assert_array_equal(predictions.numpy(), expected)


def test_several_k_from_one_pass_match_each_k_alone():
    train_x, train_y, test_x = random_problem(3)
    test_y = torch.randint(0, 5, (len(test_x),), generator=torch.Generator().manual_seed(4))
    many = knn_predict_many(train_x, train_y, test_x, 5, ks=(1, 20, 200, 1000), chunk_size=16)
    for k in (1, 20, 200, 1000):  # 1000 is more than the 300 training samples: all of them
        np.testing.assert_array_equal(many[k].numpy(), naive_knn(train_x, train_y.numpy(), test_x, 5, min(k, 300), 0.07))
    accuracies = knn_accuracies(train_x, train_y, test_x, test_y, 5, ks=(20, 200))
    assert accuracies == {k: knn_accuracy(train_x, train_y, test_x, test_y, 5, k=k) for k in (20, 200)}


def test_votes_are_weighted_by_similarity():
    # One very close neighbour of class 0 outweighs two farther ones of class 1 at T=0.07,
    # while with a large temperature (almost uniform weights) the majority wins.
    train_x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    train_y = torch.tensor([0, 1, 1])
    test_x = torch.tensor([[1.0, 0.05]])
    assert knn_predict(train_x, train_y, test_x, 2, k=3, temperature=0.07).item() == 0
    assert knn_predict(train_x, train_y, test_x, 2, k=3, temperature=100.0).item() == 1


def test_separable_toy_set_is_classified_perfectly():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(4, 32) * 10.0  # orthogonal directions: cosine separates them
    train_y = torch.arange(4).repeat_interleave(50)
    test_y = torch.arange(4).repeat_interleave(25)
    train_x = centres[train_y] + torch.randn(200, 32, generator=generator)
    test_x = centres[test_y] + torch.randn(100, 32, generator=generator)
    assert knn_accuracy(train_x, train_y, test_x, test_y, 4, k=20) == 1.0


def test_chunking_does_not_change_results():
    train_x, train_y, test_x = random_problem(3, num_test=101)
    reference = knn_predict(train_x, train_y, test_x, 5, chunk_size=1024)
    for chunk_size in (1, 7, 100):
        torch.testing.assert_close(knn_predict(train_x, train_y, test_x, 5, chunk_size=chunk_size), reference)


def test_scale_invariance_and_k_larger_than_train_set():
    train_x, train_y, test_x = random_problem(4, num_train=30)
    reference = knn_predict(train_x, train_y, test_x, 5, k=30)
    torch.testing.assert_close(knn_predict(3.0 * train_x, train_y, 0.5 * test_x, 5, k=30), reference)
    torch.testing.assert_close(knn_predict(train_x, train_y, test_x, 5, k=1000), reference)


def test_accuracy_is_a_fraction():
    train_x, train_y, test_x = random_problem(5)
    test_y = knn_predict(train_x, train_y, test_x, 5)
    test_y[:20] = (test_y[:20] + 1) % 5
    assert knn_accuracy(train_x, train_y, test_x, test_y, 5) == pytest.approx(60 / 80)


def test_bad_inputs_are_errors():
    train_x, train_y, test_x = random_problem(6)
    with pytest.raises(ValueError, match="dimensions"):
        knn_predict(train_x, train_y, test_x[:, :8], 5)
    with pytest.raises(ValueError, match="must lie in"):
        knn_predict(train_x, train_y, test_x, 3)
    with pytest.raises(ValueError, match="k must be"):
        knn_predict(train_x, train_y, test_x, 5, k=0)
