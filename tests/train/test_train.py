"""Training loop: resume equals an uninterrupted run, a CPU retraining is bit-identical,
gradients reach every head; augmentations."""

import numpy as np
import pytest
import torch

from stages.backbones import DEFAULT_BACKBONE
from stages.config import TrainParams
from stages.model import TeacherModel, build_student
from stages.train.augment import random_resized_views
from stages.train.loop import RunFiles, TrainingSet, cosine_lr, resolve_train_params, train_model
from stages.train.methods import mixed_scale_sets, ugcml_terms
from stages.train.runtime import Runtime
from tests.torch_threads import torch_threads

CFG = TrainParams(
    steps=4,
    queries=2,
    neighbours=3,
    knn_refresh=2,
    input_size=32,
    embed_dim=16,
    teacher_dim=32,
    checkpoint_every=2,
    batch_embed=64,
    ema=0.9,
)


@pytest.fixture(scope="module")
def crops():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(24, 3, 32, 32, generator=g) * 255).to(torch.uint8)


GROUPS = np.arange(24) % 3


def run(tmp_path, crops, stop_after=None, cfg=CFG, n_groups=3, fp="fp"):
    return train_model(
        resolve_train_params(cfg, DEFAULT_BACKBONE, None),
        TrainingSet(crops, GROUPS % n_groups, n_groups),
        RunFiles(tmp_path / "ckpt.pt", tmp_path / "log.tsv", fp),
        seed=0,
        stop_after=stop_after,
    )


def test_resume_equals_uninterrupted_run(tmp_path, crops):
    (tmp_path / "a").mkdir()
    full = run(tmp_path / "a", crops)
    (tmp_path / "b").mkdir()
    partial = run(tmp_path / "b", crops, stop_after=2)
    assert partial.resumed_from == 0
    resumed = run(tmp_path / "b", crops)
    assert resumed.resumed_from == 2
    for (k, a), (_, b) in zip(full.student.state_dict().items(), resumed.student.state_dict().items()):
        assert torch.equal(a, b), k
    log_a = (tmp_path / "a" / "log.tsv").read_text().splitlines()
    log_b = (tmp_path / "b" / "log.tsv").read_text().splitlines()
    assert log_a == log_b and len(log_a) == 1 + CFG.steps


def test_checkpoint_of_other_params_is_not_resumed(tmp_path, crops):
    run(tmp_path, crops, stop_after=2)
    res = run(tmp_path, crops, stop_after=2, fp="other")
    assert res.resumed_from == 0


def test_gradients_reach_backbone_and_every_head(crops):
    student = build_student(
        DEFAULT_BACKBONE, 3, CFG.teacher_dim, CFG.embed_dim, CFG.input_size, head_init="shared"
    ).train()
    teacher = TeacherModel(student).eval()
    assert all(torch.equal(hd.l.weight, student.heads[0].l.weight) for hd in student.heads)  # shared init
    per_head = build_student(DEFAULT_BACKBONE, 3, CFG.teacher_dim, CFG.embed_dim, CFG.input_size, pretrained=False)
    assert not torch.equal(per_head.heads[0].l.weight, per_head.heads[1].l.weight)  # orthogonal, drawn per head
    w = per_head.heads[0].h.weight
    assert torch.allclose(w @ w.T, torch.eye(w.shape[0]), atol=1e-4) and not per_head.heads[0].h.bias.any()
    with torch.no_grad():  # let the heads disagree, as they do after a few steps
        for hd in student.heads[1:]:
            hd.l.weight.add_(0.1 * torch.randn_like(hd.l.weight))
    x = crops[:9].float() / 255
    views = random_resized_views(x, 2, CFG.aug_scale, torch.Generator().manual_seed(0), CFG.input_size)
    centroids = torch.randn(5, CFG.embed_dim)
    cfg = CFG.model_copy(update={"method": "ms_ugcml", "mix_share": 0.5})
    with torch.no_grad():
        t = teacher(views)
    terms = ugcml_terms(
        student.heads, student.backbone(views), t, torch.arange(9) % 3, cfg, centroids, torch.Generator().manual_seed(0)
    )
    assert terms["ckd"] > 0
    terms["loss"].backward()
    for head in student.heads:
        for p in (head.h.weight, head.l.weight):
            assert p.grad is not None and p.grad.abs().sum() > 0
    assert next(student.backbone.parameters()).grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_one_group_ms_ugcml_is_stml(tmp_path, crops):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    stml = run(tmp_path / "a", crops, cfg=CFG.model_copy(update={"method": "stml"}), n_groups=1)
    ms = run(tmp_path / "b", crops, cfg=CFG.model_copy(update={"method": "ms_ugcml"}), n_groups=1)
    for (k, a), (_, b) in zip(stml.student.state_dict().items(), ms.student.state_dict().items()):
        assert torch.equal(a, b), k


def test_ms_ugcml_has_one_head_per_group_and_logs_ckd(tmp_path, crops):
    update = {"method": "ms_ugcml", "mix_share": 0.5, "ckd_rows": "all"}
    res = run(tmp_path, crops, cfg=CFG.model_copy(update=update), n_groups=3)
    assert len(res.student.heads) == 3
    rows = [line.split("\t") for line in (tmp_path / "log.tsv").read_text().splitlines()]
    ckd = [float(r[rows[0].index("ckd")]) for r in rows[1:]]
    # a KL divergence: >= 0 up to float rounding (two GEMMs of different shapes give +-1e-8 on some CPUs)
    assert len(ckd) == CFG.steps and all(c >= -1e-6 for c in ckd) and any(c > 1e-6 for c in ckd)
    # what each part does: per group, per head pair (with its rows), the teacher's lag
    for col in ("rc_h_g1", "self_distill_g3", "set_g2", "ckd_g1g3", "ckd_rows_g2g3", "ts_distance"):
        assert col in rows[0], col
    ckd_rows = [float(r[rows[0].index("ckd_rows_g1g2")]) for r in rows[1:]]
    assert all(n == 2 * CFG.queries * CFG.neighbours for n in ckd_rows)  # ckd_rows: all -> every row of the batch
    lag = [float(r[rows[0].index("ts_distance")]) for r in rows[1:]]
    assert all(v > 0 for v in lag)


def test_ntxent_baseline_trains(tmp_path, crops):
    res = run(tmp_path, crops, cfg=CFG.model_copy(update={"method": "ntxent"}), n_groups=1)
    assert len(res.student.heads) == 1


def _per_group_reference(heads, feat, teacher_feat, batch_group, cfg, centroids, generator):
    """ugcml_terms written as the paper reads, one group and one group pair at a time (teacher head
    m's block of ``teacher_feat`` labels group m; the two views of a crop are one crop)."""
    from stages.losses import ckd_pair, relaxed_contrastive, self_distillation, teacher_weights, view_positives

    n = len(batch_group)
    g = len(heads)
    sets = mixed_scale_sets(batch_group, g, cfg.mix_share, generator, cfg.mix_from == "all")
    per_head = teacher_feat.shape[1] // cfg.teacher_dim > 1
    rc_h = rc_l = sd = torch.zeros(())
    ls = []
    for m, (head, rows) in enumerate(zip(heads, sets)):
        h, l = head(feat[torch.cat([rows, rows + n])])
        ls.append(l)
        if len(rows) >= 2:
            block = teacher_feat[:, m * cfg.teacher_dim : (m + 1) * cfg.teacher_dim] if per_head else teacher_feat
            t = block[torch.cat([rows, rows + n])]
            w = teacher_weights(t, cfg.sigma, cfg.context_k, view_positives(len(rows), 2))
            rc_h = rc_h + relaxed_contrastive(h, w, cfg.delta)
            rc_l = rc_l + relaxed_contrastive(l, w, cfg.delta)
            sd = sd + self_distillation(h, l)
    ckd = []
    for a in range(g):
        for b in range(a + 1, g):
            if cfg.ckd_rows == "all":  # every row through both heads
                ckd.append(ckd_pair(heads[a].l(feat), heads[b].l(feat), centroids, cfg.ckd_tau))
                continue
            pick = [[(s == c).nonzero().item() for c in sets[a] if c in sets[b]] for s in (sets[a], sets[b])]
            va, vb = (
                torch.tensor(p + [i + len(s) for i in p], dtype=torch.long) for p, s in zip(pick, (sets[a], sets[b]))
            )
            ckd.append(ckd_pair(ls[a][va], ls[b][vb], centroids, cfg.ckd_tau))
    scale = 1.0 / g if cfg.group_reduction == "mean" else 1.0
    terms = {"rc_h": rc_h * scale, "rc_l": rc_l * scale, "self_distill": sd * scale}
    terms["ckd"] = torch.stack(ckd).mean() if ckd else torch.zeros(())
    rc_weight = 0.5 if cfg.group_reduction == "mean" else 1.0
    terms["loss"] = rc_weight * (terms["rc_h"] + terms["rc_l"]) + terms["self_distill"] + terms["ckd"]
    return terms


@pytest.mark.parametrize(
    "groups",
    [[0, 0, 0, 1, 1, 1, 1, 2, 2, 2], [0, 0, 1, 2, 2, 2, 2, 2, 2, 2], [0] * 6, [0, 1, 1, 1, 2, 2], [1, 1, 1, 2, 2, 3]],
)
@pytest.mark.parametrize(
    "options",
    [
        {"ckd_rows": "all", "group_reduction": "mean", "teacher_heads": "per_group"},
        {"ckd_rows": "shared", "group_reduction": "sum", "teacher_heads": "shared"},
        {"ckd_rows": "shared", "group_reduction": "mean", "teacher_heads": "per_group", "mix_from": "all"},
    ],
)
def test_batched_terms_equal_the_per_group_reference(groups, options):
    """The sets' losses computed at once (padded) equal the group-by-group computation, values and
    gradients, with sets of different sizes, a group of one crop and an empty group."""
    torch.manual_seed(0)
    batch_group = torch.tensor(groups)
    n_groups = int(batch_group.max()) + 1
    heads = build_student(DEFAULT_BACKBONE, n_groups, 12, 8, 32, pretrained=False).heads
    for hd in heads[1:]:  # heads that disagree
        torch.nn.init.normal_(hd.l.weight)
    feat = torch.randn(2 * len(groups), heads[0].h.in_features, requires_grad=True)
    blocks = n_groups if options["teacher_heads"] == "per_group" else 1
    teacher_feat = torch.randn(2 * len(groups), 12 * blocks)
    cfg = CFG.model_copy(update={"mix_share": 0.5, "context_k": 3, "teacher_dim": 12, **options})
    centroids = torch.randn(5, 8)
    got = ugcml_terms(heads, feat, teacher_feat, batch_group, cfg, centroids, torch.Generator().manual_seed(1))
    ref = _per_group_reference(heads, feat, teacher_feat, batch_group, cfg, centroids, torch.Generator().manual_seed(1))
    for k, v in ref.items():
        assert got[k].item() == pytest.approx(v.item(), abs=1e-5), k
    params = [feat] + list(heads.parameters())
    g_ref = torch.autograd.grad(ref["loss"], params, allow_unused=True)
    for p, a, b in zip(params, torch.autograd.grad(got["loss"], params, allow_unused=True), g_ref):
        zero = torch.zeros_like(p)  # a head that no loss uses gets no gradient, or a zero one
        assert torch.allclose(zero if a is None else a, zero if b is None else b, atol=1e-5)
    n_pairs = n_groups * (n_groups - 1) // 2
    assert len(got["diagnostics"]) == 4 * n_groups + 2 * n_pairs  # per group: rc_h, rc_l, self_distill, set


def test_mixed_scale_sets():
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    sets = mixed_scale_sets(g, 3, 0.5, torch.Generator().manual_seed(0))
    assert sets[0].tolist() == [0, 1, 2, 3]  # the smallest group sees only its own crops
    assert sets[1][:5].tolist() == [4, 5, 6, 7, 8] and len(sets[1]) == 5 + 2
    assert set(sets[1][5:].tolist()) <= {0, 1, 2, 3}
    assert len(sets[2]) == 2 + 2 + 3 and set(sets[2][2:].tolist()) <= set(range(9))
    assert [len(s) for s in mixed_scale_sets(g, 3, 0.0, torch.Generator())] == [4, 5, 2]
    both = mixed_scale_sets(g, 3, 0.5, torch.Generator().manual_seed(0), from_all=True)
    assert [len(s) for s in both] == [4 + 3 + 1, 5 + 2 + 1, 2 + 2 + 3]  # ceil(0.5 n_j) of every other group
    assert set(both[0][4:7].tolist()) <= {4, 5, 6, 7, 8} and set(both[0][7:].tolist()) <= {9, 10}
    assert set(both[1][5:6].tolist()) <= {0, 1, 2, 3} and set(both[1][7:].tolist()) <= {9, 10}
    assert all(len(set(s.tolist())) == len(s) for s in both)  # no crop twice in one set


@pytest.mark.parametrize("scope", ["group", "all"])
def test_a_cluster_trains_the_head_of_its_query_group(scope):
    """With knn_scope: all a query's neighbours may be of any group; the whole cluster goes to the
    set of the query's group (the set sizes logged per group count the clusters' crops)."""
    from stages.train.methods import build_method

    group_of = np.repeat(np.arange(3), 20)
    update = {"method": "ms_ugcml", "queries": 3, "mix_share": 0.0, "knn_scope": scope, "teacher_dim": 12}
    cfg = CFG.model_copy(update=update)
    method = build_method(cfg, group_of, 3, seed=0)
    method.sampler.refresh(np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32))
    idx = torch.from_numpy(method.batch())
    queries = idx.view(3, cfg.neighbours)[:, 0]
    assert sorted(group_of[queries].tolist()) == [0, 1, 2]
    assert (scope == "all") == bool((group_of[idx.view(3, -1)] != group_of[queries][:, None]).any())
    heads = build_student(DEFAULT_BACKBONE, 3, 12, 8, 32, pretrained=False).heads
    feat = torch.randn(2 * len(idx), heads[0].h.in_features)
    terms = method.loss(heads, feat, torch.randn(2 * len(idx), 12 * 3), idx, torch.Generator().manual_seed(0))
    sets = terms["diagnostics"][3:12:4]  # set_g1..set_g3
    assert sets.tolist() == [cfg.neighbours] * 3  # one whole cluster per group


def test_views_shape_range_and_determinism(crops):
    x = crops[:5].float() / 255
    a = random_resized_views(x, 2, (0.5, 1.0), torch.Generator().manual_seed(1), 24)
    b = random_resized_views(x, 2, (0.5, 1.0), torch.Generator().manual_seed(1), 24)
    assert a.shape == (10, 3, 24, 24) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a[:5], a[5:])  # the two views differ


def test_cosine_schedule():
    assert cosine_lr(0, 10, 0) == pytest.approx(1.0)
    assert cosine_lr(5, 10, 0) == pytest.approx(0.5)
    assert cosine_lr(10, 10, 0) == pytest.approx(0.0)
    assert cosine_lr(0, 10, 2) == pytest.approx(0.5)


def test_completed_run_with_deleted_log_restores_the_log(tmp_path, crops):
    # DVC deletes non-persistent outputs (the log) before rerunning a stage; the checkpoint stays.
    first = run(tmp_path, crops)
    log = (tmp_path / "log.tsv").read_text()
    (tmp_path / "log.tsv").unlink()
    again = run(tmp_path, crops)
    assert again.resumed_from == CFG.steps
    assert (tmp_path / "log.tsv").read_text() == log
    for a, b in zip(first.student.state_dict().values(), again.student.state_dict().values()):
        assert torch.equal(a, b)


def test_ntxent_builds_no_teacher(tmp_path, crops, monkeypatch):
    import stages.train.loop as loop

    def no_teacher(*_):
        raise AssertionError("ntxent must not build an EMA teacher")

    monkeypatch.setattr(loop, "TeacherModel", no_teacher)
    for variant in ("views", "anchor"):
        cfg = CFG.model_copy(update={"method": "ntxent", "ntxent_variant": variant, "steps": 2})
        (tmp_path / variant).mkdir()
        run(tmp_path / variant, crops, cfg=cfg, n_groups=1)
        ckpt = torch.load(tmp_path / variant / "ckpt.pt", weights_only=True)
        assert ckpt["teacher"] is None and ckpt["method"]["rng"]


def test_views_of_a_slice_are_the_global_batch_rows(crops):
    x = crops[:6].float() / 255
    full = random_resized_views(x, 2, (0.5, 1.0), torch.Generator().manual_seed(4), 24)
    part = random_resized_views(x[2:4], 2, (0.5, 1.0), torch.Generator().manual_seed(4), 24, rows=(2, 4), batch=6)
    assert torch.allclose(part, full[[2, 3, 8, 9]], atol=1e-6)


def test_cpu_runtime_is_fp32_uncompiled_single_process(monkeypatch):
    from stages.train.runtime import resolve_runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rt = resolve_runtime(TrainParams(precision="fp16", compile="auto"))
    assert rt.device.type == "cpu" and rt.autocast_dtype is None and not rt.compile and rt.world == 1
    assert rt.grad_scaler() is None and rt.rows(40) == (0, 40)
    with pytest.raises(ValueError, match="train.device"):
        resolve_runtime(TrainParams(device="cuda"))


@pytest.fixture
def two_threads():
    with torch_threads(2):  # the parallel CPU kernels whose order varies
        yield


def test_cpu_kernels_make_the_duplicate_row_backward_repeatable(two_threads):
    # The backward of feat[rows] with repeated rows (a crop in several heads' sets) is an
    # accumulating index_put_: on 2 threads its default CPU kernel adds in a varying order.
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(64, 1280, generator=g, requires_grad=True)
    rows = torch.randint(0, 64, (256,), generator=g)
    w = torch.randn(256, 1280, generator=g)

    def grad():
        feat.grad = None
        (feat[rows] * w).sum().backward()
        return feat.grad.clone()

    assert not torch.are_deterministic_algorithms_enabled()
    with Runtime(torch.device("cpu")).deterministic_kernels():
        assert torch.are_deterministic_algorithms_enabled()
        first = grad()
        assert all(torch.equal(first, grad()) for _ in range(5))
    assert not torch.are_deterministic_algorithms_enabled()  # restored for the rest of the process
    assert torch.utils.deterministic.fill_uninitialized_memory
    assert torch.allclose(first, torch.zeros(64, 1280).index_add_(0, rows, w), atol=1e-5)


def test_retraining_on_two_threads_is_bit_identical(tmp_path, crops, two_threads, monkeypatch):
    import stages.train.loop as loop

    # every step runs under the deterministic kernels (a race shows only now and then in 3 steps)
    flags, step_terms = [], loop.step_terms
    monkeypatch.setattr(
        loop, "step_terms", lambda *a: flags.append(torch.are_deterministic_algorithms_enabled()) or step_terms(*a)
    )
    # 4 x 4 crops x 2 views x 1280 features: large enough for the parallel CPU kernels
    cfg = CFG.model_copy(update={"queries": 4, "neighbours": 4, "steps": 3, "knn_refresh": 3})
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        runs.append(run(tmp_path / name, crops, cfg=cfg, n_groups=3))
    for (k, a), b in zip(runs[0].student.state_dict().items(), runs[1].student.state_dict().values()):
        assert torch.equal(a, b), k
    assert (tmp_path / "a" / "log.tsv").read_text() == (tmp_path / "b" / "log.tsv").read_text()
    assert flags == [True] * 6 and not torch.are_deterministic_algorithms_enabled()


def test_ema_teacher_head_follows_the_mean_of_the_h_layers():
    student = build_student(DEFAULT_BACKBONE, 3, 8, 4, 32, pretrained=False)
    teacher = TeacherModel(student, "shared")
    per_group = TeacherModel(student, "per_group")
    with torch.no_grad():
        for hd in student.heads:
            hd.h.weight.normal_()
            hd.h.bias.normal_()
    before = teacher.heads[0].weight.clone()
    before_m = [hd.weight.clone() for hd in per_group.heads]
    teacher.ema_update(student, 0.9)
    per_group.ema_update(student, 0.9)
    mean = torch.stack([hd.h.weight for hd in student.heads]).mean(0)
    assert torch.allclose(teacher.heads[0].weight, 0.9 * before + 0.1 * mean, atol=1e-6)
    for m, hd in enumerate(student.heads):  # the authors' teacher: head m follows student head m
        assert torch.allclose(per_group.heads[m].weight, 0.9 * before_m[m] + 0.1 * hd.h.weight, atol=1e-6)
    first = next(student.backbone.parameters())
    assert torch.allclose(next(teacher.backbone.parameters()), first, atol=1e-6)  # same start: the EMA stays


def test_embed_head_first_or_mean_of_the_normalised_heads():
    import torch.nn.functional as F

    student = build_student(DEFAULT_BACKBONE, 3, 8, 4, 32, pretrained=False).eval()
    with torch.no_grad():
        for hd in student.heads:
            hd.l.weight.normal_()
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ls = [F.normalize(hd.l(student.backbone(x)), dim=1) for hd in student.heads]
    student.embed_head = "first"
    assert torch.allclose(student.embed(x), ls[0], atol=1e-6)
    student.embed_head = "mean"
    mean = (ls[0] + ls[1] + ls[2]) / 3
    assert torch.allclose(student.embed(x), mean / mean.norm(dim=1, keepdim=True), atol=1e-6)
    assert not torch.allclose(student.embed(x), ls[0], atol=1e-3)  # the heads differ: so do the choices


def test_routed_embedding_sends_each_crop_through_its_scale_groups_head(tmp_path):
    import torch.nn.functional as F

    from stages.groups.quantiles import assign_groups
    from stages.model import load_model, save_model

    boundaries = [100.0, 400.0]  # three groups: < 100, [100, 400), >= 400 px^2
    student = build_student(DEFAULT_BACKBONE, 3, 8, 4, 32, pretrained=False, group_boundaries=boundaries).eval()
    with torch.no_grad():
        for hd in student.heads:
            hd.l.weight.normal_()
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    areas = torch.tensor([50.0, 100.0, 399.9, 400.0, 9e4])  # on a boundary: the upper group, as the groups stage
    with torch.no_grad():
        ls = [F.normalize(hd.l(student.backbone(x)), dim=1) for hd in student.heads]
    student.embed_head = "routed"
    got = student.embed(x, areas)
    for row, group in enumerate([0, 1, 1, 2, 2]):
        assert torch.allclose(got[row], ls[group][row], atol=1e-6)
    assert student.scale_group(areas).tolist() == assign_groups(areas.numpy(), np.array(boundaries)).tolist()
    with pytest.raises(ValueError, match="box area"):
        student.embed(x)
    save_model(
        tmp_path / "m.pt",
        student,
        {
            "backbone": DEFAULT_BACKBONE,
            "n_heads": 3,
            "teacher_dim": 8,
            "embed_dim": 4,
            "input_size": 32,
            "embed_head": "routed",
            "group_boundaries": boundaries,
        },
    )
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.routed and torch.allclose(loaded.embed(x, areas), got, atol=1e-6)
    one_head = build_student(DEFAULT_BACKBONE, 1, 8, 4, 32, pretrained=False, embed_head="routed").eval()
    assert not one_head.routed and one_head.embed(x).shape == (5, 4)  # one group: nothing to route


def test_fingerprint_ignores_how_the_trained_model_embeds():
    from stages.config import Params
    from stages.train import fingerprint

    ids = np.arange(4)

    def fp(**train):
        return fingerprint(Params.model_validate({"train": train}), DEFAULT_BACKBONE, ids, "data")

    assert fp(embed_head="first") == fp(embed_head="mean")  # switching heads resumes the finished run
    assert fp(lr=1e-3) != fp(lr=2e-3)


def test_ema_every_updates_the_teacher_on_every_nth_step_across_a_resume(tmp_path, crops, monkeypatch):
    calls = []
    update = TeacherModel.ema_update
    monkeypatch.setattr(TeacherModel, "ema_update", lambda self, s, m: calls.append(m) or update(self, s, m))
    cfg = CFG.model_copy(update={"ema_every": 3})  # 4 steps: the teacher moves after steps 0 and 3
    run(tmp_path, crops, stop_after=2, cfg=cfg)
    assert len(calls) == 1
    run(tmp_path, crops, cfg=cfg)  # resumed at step 2: the count goes on from the run's step, not 0
    assert len(calls) == 2
    calls.clear()
    (tmp_path / "every").mkdir()
    run(tmp_path / "every", crops)
    assert calls == [CFG.ema] * CFG.steps
