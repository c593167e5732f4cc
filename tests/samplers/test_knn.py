import numpy as np
import pytest

from stages.samplers import KnnBatchSampler, group_quotas


def test_group_quotas():
    assert group_quotas(np.array([100, 100]), 10).tolist() == [5, 5]
    assert group_quotas(np.array([900, 100, 0]), 10).tolist() == [9, 1, 0]
    q = group_quotas(np.array([1000, 1, 1, 1]), 8)
    assert q.sum() == 8 and (q >= 1).all()


def test_batches_have_configured_composition():
    rng = np.random.default_rng(0)
    n, k = 200, 5
    group_of = np.repeat(np.arange(4), 50)
    emb = rng.normal(size=(n, 16)).astype(np.float32)
    s = KnnBatchSampler(group_of, 4, queries=8, k=k, seed=0)
    s.refresh(emb)
    batch = s.sample()
    assert batch.shape == (8 * k,)
    blocks = batch.reshape(8, k)
    # each query's neighbours come from the query's own group, the query first
    assert (group_of[blocks] == group_of[blocks[:, :1]]).all()
    assert np.bincount(group_of[blocks[:, 0]], minlength=4).tolist() == [2, 2, 2, 2]
    # the neighbours are the exact nearest ones by cosine similarity
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    q = blocks[0, 0]
    members = np.flatnonzero(group_of == group_of[q])
    best = members[np.argsort(-(e[members] @ e[q]))[:k]]
    assert set(blocks[0]) == set(best)


def test_scope_all_draws_neighbours_from_every_group():
    rng = np.random.default_rng(0)
    n, k = 200, 5
    group_of = np.repeat(np.arange(4), 50)
    emb = rng.normal(size=(n, 16)).astype(np.float32)
    s = KnnBatchSampler(group_of, 4, queries=8, k=k, seed=0, scope="all")
    s.refresh(emb[::2], rows=np.arange(0, n, 2))  # half of the crops: batches come from those only
    blocks = s.sample().reshape(8, k)
    assert np.bincount(group_of[blocks[:, 0]], minlength=4).tolist() == [2, 2, 2, 2]  # queries by group
    assert (blocks % 2 == 0).all()
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    embedded = np.arange(0, n, 2)
    for q, row in zip(blocks[:, 0], blocks):  # the exact nearest of all embedded crops, any group, query first
        best = embedded[np.argsort(-(e[embedded] @ e[q]))[:k]]
        assert row[0] == q and set(row) == set(best)
    assert (group_of[blocks] != group_of[blocks[:, :1]]).any()  # random vectors: groups mix
    with pytest.raises(ValueError, match="scope"):
        KnnBatchSampler(group_of, 4, queries=8, k=k, seed=0, scope="global")


def test_state_round_trip_reproduces_batches():
    emb = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    a = KnnBatchSampler(np.zeros(50, int), 1, 4, 3, seed=3)
    a.refresh(emb)
    a.sample()
    state = a.state_dict()
    b = KnnBatchSampler(np.zeros(50, int), 1, 4, 3, seed=99)
    b.load_state_dict(state)
    assert (a.sample() == b.sample()).all()


def test_tiny_group_repeats_neighbours():
    s = KnnBatchSampler(np.array([0, 0, 1]), 2, queries=2, k=3, seed=0)
    s.refresh(np.eye(3, dtype=np.float32))
    assert s.sample().shape == (6,)


def test_self_first_drops_the_query_and_repeats_missing_neighbours():
    from stages.samplers.knn import _self_first

    found = np.array([[4, 0, 2], [1, 7, -1], [-1, -1, -1]])
    got = _self_first(found, np.array([0, 1, 2]), 4)
    assert got.tolist() == [[0, 4, 2, 4], [1, 7, 7, 7], [2, 2, 2, 2]]


def test_large_groups_get_an_ivfpq_graph_built_chunk_by_chunk(monkeypatch, tmp_path):
    """Above exact_max a group is indexed with IVF-PQ from a row store read in chunks: same-group
    neighbours, the query first, mostly the true nearest ones (clustered data)."""
    import stages.samplers.knn as knn
    from stages.vectors.rows import MappedRows

    monkeypatch.setattr(knn, "SEARCH_ROWS", 700)
    rng = np.random.default_rng(0)
    n, k, d = 4000, 4, 32
    centres = rng.normal(size=(n // 4, d)).astype(np.float32)
    emb = centres[np.arange(n) // 4] + 0.05 * rng.normal(size=(n, d)).astype(np.float32)  # 4 near-copies each
    group_of = (np.arange(n) // 4) % 2
    store = MappedRows(tmp_path / "h.f16", (n, d), create=True)
    store.write(0, emb)
    s = KnnBatchSampler(group_of, 2, queries=4, k=k, seed=0, exact_max=1000, nprobe=8, pq_m=16)
    s.refresh(store)
    nb = s.neighbours
    assert nb.shape == (n, k) and (nb[:, 0] == np.arange(n)).all()
    assert (group_of[nb] == group_of[:, None]).all()
    same_cluster = (nb[:, 1:] // 4) == (np.arange(n) // 4)[:, None]
    assert same_cluster.mean() > 0.9


def test_refresh_on_a_share_samples_only_the_refreshed_crops():
    group_of = np.repeat(np.arange(2), 40)
    s = KnnBatchSampler(group_of, 2, queries=4, k=3, seed=0)
    rows = s.refresh_rows(0.25, seed=5)
    assert len(rows) == 20 and (np.bincount(group_of[rows]) == 10).all()
    emb = np.random.default_rng(0).normal(size=(len(rows), 8)).astype(np.float32)
    s.refresh(emb, rows)
    for _ in range(5):
        assert np.isin(s.sample(), rows).all()
    assert (s.refresh_rows(0.25, seed=5) == rows).all() and s.refresh_rows(1.0, seed=5) is None


def test_large_group_candidates_are_reranked_on_the_full_vectors():
    """On hard (unclustered) data the compressed codes alone find a third of the exact neighbours;
    re-ranking ``rerank`` x more candidates on the embeddings finds most of them (0.34 -> 0.62 here)."""
    rng = np.random.default_rng(0)
    n, k, d = 6000, 5, 64
    emb = rng.normal(size=(n, d)).astype(np.float32) @ rng.normal(size=(d, d)).astype(np.float32)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    exact = np.argsort(-(x @ x.T), axis=1)[:, 1:k]

    def recall(rerank: int) -> float:
        s = KnnBatchSampler(np.zeros(n, int), 1, queries=4, k=k, seed=0, exact_max=1000, nprobe=8, rerank=rerank)
        s.refresh(emb)
        assert (s.neighbours[:, 0] == np.arange(n)).all()
        return np.mean([len(set(a) & set(b)) for a, b in zip(s.neighbours[:, 1:], exact)]) / (k - 1)

    codes_only, reranked = recall(1), recall(4)
    assert codes_only < 0.45 and reranked > 0.55
