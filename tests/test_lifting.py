"""After training: lifting evidence (blend + X-ray votes), surface propagation, and the 3D query rule.

Each test builds the case where the earlier pipeline failed on generated scenes (issue 9): a
Gaussian no view sees well, a grazing splat beside a well-seen surface, a background query whose
2D mask leaks over an object, a part whose whole is not the largest active query.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from splatseg.query import CONTAINS, MEMBERSHIP, Click, click_ray, pick_query, pick_with_membership
from splatseg.render import render
from splatseg.run import Field
from splatseg.train.lifting import LiftEvidence, centre_pixels, evidence_scores, fill_unseen, lift_evidence
from splatseg.train.refine import RefineConfig, containment, refine_scores, surface_graph
from splatseg.types import Splats
from splatseg.viewer.picking import PickingTensors, scores_along_ray


# ----------------------------------------------------------------------------- evidence


def test_centre_pixels_projects_like_a_pinhole():
    viewmat = torch.eye(4)
    K = torch.tensor([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    means = torch.tensor([[0.0, 0.0, 2.0], [0.2, -0.1, 1.0], [0.0, 0.0, -1.0], [5.0, 0.0, 1.0]])
    pix, inside = centre_pixels(means, viewmat, K, 64, 48)
    # (0,0,2) -> (32, 24); (0.2,-0.1,1) -> (52, 14); behind the camera; outside the image
    assert inside.tolist() == [True, True, False, False]
    assert pix[0].item() == 24 * 64 + 32 and pix[1].item() == 14 * 64 + 52


def evidence(blend_sum, blend_weight, xray_sum, xray_count) -> LiftEvidence:
    f = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return LiftEvidence(f(blend_sum), f(blend_weight), f(xray_sum), f(xray_count))


def test_xray_votes_decide_a_hidden_gaussian_but_do_not_overturn_a_seen_one():
    # Gaussians 0-3 seen well (blend weight 10 each), 4 hidden in every view (weight 0): the only
    # evidence for 4 is that its centre projects into the object's mask in 8 of 10 views.
    ev = evidence(
        blend_sum=[[10.0], [10.0], [0.0], [0.0], [0.0]],
        blend_weight=[10, 10, 10, 10, 0],
        xray_sum=[[2.0], [2.0], [10.0], [10.0], [8.0]],  # 2, 3: background behind the object: the object's votes everywhere
        xray_count=[10, 10, 10, 10, 10],
    )
    blend_only, support0 = evidence_scores(ev, 0.0)
    assert blend_only[4, 0] == 0.0 and support0[4] == 0.0  # no evidence without votes
    scores, support = evidence_scores(ev, 0.01)
    assert scores[4, 0] == pytest.approx(0.8, abs=1e-5)  # decided by its votes
    assert support[4] == pytest.approx(0.01 * 10 * 10)
    assert scores[0, 0] > 0.9 and scores[2, 0] < 0.1  # a seen Gaussian keeps what the views saw
    filled = fill_unseen(blend_only, support0, np.arange(15, dtype=np.float32).reshape(5, 3), neighbours=2)
    assert filled[4, 0] == 0.0  # without votes the hidden one follows its nearest neighbours (2, 3: background)


class _StubRenderer:
    """A 4x3 view whose probabilities are given directly (features are the identity)."""

    width, height = 4, 3

    def __init__(self, probs: torch.Tensor):
        self.viewmat = torch.eye(4)
        self.K = torch.tensor([[2.0, 0, 2], [0, 2.0, 1.5], [0, 0, 1]])
        self.probs = probs

    def features(self, per_gaussian):
        return self.probs

    def lift(self, values):
        n = 3
        return torch.zeros(n, values.shape[1]), torch.zeros(n)


class _IdentityModel:
    def __init__(self, k: int):
        self.queries = torch.zeros(k, k)
        self.features = torch.zeros(3, k)

    def logits(self, fmap):
        return torch.logit(fmap.clamp(1e-6, 1 - 1e-6)).T


def test_lift_evidence_votes_only_where_a_centre_lands_in_the_image():
    probs = torch.full((12, 1), 0.5)
    probs[1 * 4 + 2] = 0.9  # pixel (col 2, row 1)
    views = [type("V", (), {"renderer": _StubRenderer(probs)})()] * 2
    means = torch.tensor([[0.0, 0.0, 1.0], [0.2, -0.4, 1.0], [9.0, 0.0, 1.0]])  # (2, 1.5) -> pixel (2, 1); (2.4, 0.7) -> (2, 0); outside
    ev = lift_evidence(_IdentityModel(1), views, means)
    assert ev.xray_count.tolist() == [2.0, 2.0, 0.0]
    assert ev.xray_sum[:, 0] == pytest.approx([1.8, 1.0, 0.0], abs=1e-4)  # the one outside gets no vote


# ----------------------------------------------------------------------------- surface propagation


def plane_and_ball_splats(rng) -> tuple[Splats, np.ndarray]:
    """A flat table of 400 splats in z = 0 and a ball of 300 splats of radius 0.2 resting on it;
    returns (splats, is_ball [N])."""
    xy = rng.uniform(-1, 1, (400, 2))
    table = np.c_[xy, np.zeros(400)]
    v = rng.normal(size=(300, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ball = v * 0.2 + [0, 0, 0.2]
    means = np.r_[table, ball].astype(np.float32)
    n = len(means)
    normals = np.r_[np.tile([0, 0, 1.0], (400, 1)), v]
    # a quaternion turning z onto each normal (the smallest scale is along z)
    z = np.array([0, 0, 1.0])
    axis = np.cross(z, normals)
    s = np.linalg.norm(axis, axis=1, keepdims=True)
    c = normals @ z
    angle = np.arctan2(s[:, 0], c)
    axis = np.where(s > 1e-9, axis / np.maximum(s, 1e-12), [1.0, 0, 0])
    quats = np.c_[np.cos(angle / 2), axis * np.sin(angle / 2)[:, None]].astype(np.float32)  # w x y z
    log_scales = np.log(np.tile([0.03, 0.03, 0.002], (n, 1))).astype(np.float32)
    splats = Splats(means=means, quats=quats, log_scales=log_scales, opacity_logits=np.full(n, 3.0, np.float32),
                    sh0=np.zeros((n, 1, 3), np.float32), shN=np.zeros((n, 0, 3), np.float32))
    return splats, np.r_[np.zeros(400, bool), np.ones(300, bool)]


def test_propagation_fills_a_barely_seen_underside_and_keeps_the_table_out():
    rng = np.random.default_rng(0)
    splats, is_ball = plane_and_ball_splats(rng)
    n = len(is_ball)
    under = is_ball & (splats.means[:, 2] < 0.07)  # the ball's underside: grazing, barely seen
    scores = np.where(is_ball, 1.0, 0.0).astype(np.float32)[:, None]
    scores[under] = 0.0  # what its few pixels showed: the table behind
    visibility = np.full(n, 10.0, np.float32)
    visibility[under] = 0.05
    graph = surface_graph(splats, RefineConfig())
    out = refine_scores(scores, visibility, graph, RefineConfig(smoothing=1.0))
    assert out[under, 0].mean() > 0.6  # pulled up by the rest of the ball
    table = ~is_ball
    taken = table & (out[:, 0] > 0.3)  # the table it touches stays out, but for a few splats right under the ball
    assert taken.sum() <= 0.02 * table.sum() and np.linalg.norm(splats.means[taken, :2], axis=1).max(initial=0) < 0.2
    assert out[is_ball & ~under, 0].min() > 0.5  # the seen ball stays selected
    unchanged = refine_scores(scores, visibility, graph, RefineConfig(smoothing=0.0))
    assert np.array_equal(unchanged, scores)


# ----------------------------------------------------------------------------- the 3D query rule


def rule_field() -> Field:
    """8 Gaussians: object = 0..3 with part = 0..1; background = 4..7. Queries: 0 background
    (largest; its 2D mask leaks over the object), 1 object, 2 part, 3 a mistaken segment joining
    the clicked Gaussian 0 to the background (holds the click, but not the part)."""
    n = 8
    lifted = np.zeros((4, n), np.uint8)
    lifted[0, 4:8] = 250
    lifted[1, 0:4] = 240
    lifted[2, 0:2] = 245
    lifted[3, [0, 4, 5, 6, 7]] = 235
    size = lifted.astype(np.float32).sum(1) / 255
    size[0] = 10.0  # the background is the largest query
    return Field(run_dir=Path("."), info={"num_gaussians": n}, features=np.zeros((n, 4), np.float32),
                 queries=np.eye(4, dtype=np.float32), query_bias=np.zeros(4, np.float32), query_clip=None, lifted=lifted,
                 query_size=size, visibility=np.ones(n, np.float32), view_names=["v"],
                 view_maps=np.zeros((1, 2, 2, 4), np.float16), image_sizes=np.array([[2, 2]]),
                 containment=containment(lifted > 127))


def test_a_leaking_background_query_does_not_answer_a_click_on_the_object():
    fld = rule_field()
    logits = np.array([2.0, 1.0, 3.0, -1.0])  # three active at the click (on the part)
    at_part = np.array([0.05, 0.95, 0.96, 0.9])  # the clicked surface: object, part and the mistaken segment
    assert pick_with_membership(fld, logits, None, "whole") == 0  # the 2D rule: the largest active one
    assert pick_with_membership(fld, logits, at_part, "whole") == 1  # walks up from the part to the object
    assert pick_with_membership(fld, logits, at_part, "part") == 2
    on_object_only = np.array([0.05, 0.95, 0.1, 0.1])
    assert pick_with_membership(fld, np.array([2.0, 1.0, -1.0, -1.0]), on_object_only, "part") == 1  # nothing smaller: itself
    nothing_active = np.array([-1.0, -1.0, -1.0, -2.0])
    assert pick_with_membership(fld, nothing_active, at_part, "whole") == 1  # held in 3D although inactive in 2D
    assert pick_with_membership(fld, nothing_active, np.array([0.1, 0.3, 0.2, 0.1]), "whole") == 1  # none holds it: the closest
    assert fld.containment[2, 1] >= CONTAINS and fld.containment[1, 0] < CONTAINS and MEMBERSHIP == 0.5
    assert fld.containment[2, 3] < CONTAINS and fld.query_size[3] > fld.query_size[1]  # larger, held, but not containing


def test_pick_query_without_containment_keeps_the_2d_rule():
    import dataclasses

    fld = dataclasses.replace(rule_field(), containment=None)
    feature = np.array([2.0, 1.0, 3.0, -1.0], np.float32)  # queries are the identity: logits = feature
    assert pick_query(fld, feature, "whole", np.array([0.05, 0.95, 0.96, 0.9])) == 0


def test_scores_along_a_click_ray_match_a_full_render(tiny_run):
    """The 3D scores under a click (the lifted scores composited along the ray through the pixel of
    the stored camera) equal a full render of the lifted scores at that pixel, divided by alpha."""
    from splatseg.data.placement import splats_in_world
    from splatseg.run import load_field

    fld = load_field(tiny_run)
    assert fld.containment is not None and fld.view_viewmats is not None
    splats = splats_in_world(fld.splats_path, fld.info.get("splats_transform"))
    picking = PickingTensors.build(splats.means, splats.unit_quats, splats.scales, splats.opacities, fld.features)
    v = 0
    W, H = (int(s) for s in fld.image_sizes[v])
    params = splats.torch_params()
    values = torch.from_numpy(fld.lifted.T.astype(np.float32) / 255.0)
    with torch.no_grad():
        full = render(params["means"], params["quats"], params["scales"], params["opacities"], values,
                      torch.from_numpy(fld.view_viewmats[v : v + 1]).float(), torch.from_numpy(fld.view_Ks[v : v + 1]).float(), W, H)
    alpha = full.alphas[0, ..., 0].numpy()
    rows, cols = np.nonzero(alpha > 0.9)
    checked = 0
    for j in np.linspace(0, len(rows) - 1, 5).astype(int):
        click = Click(fld.view_names[v], cols[j] + 0.5, rows[j] + 0.5)
        at = scores_along_ray(picking, fld.lifted, *click_ray(fld, click))
        expected = full.colors[0, rows[j], cols[j]].numpy() / alpha[rows[j], cols[j]]
        assert at is not None and np.allclose(at, expected, atol=0.02), (at - expected).max()
        checked += 1
    assert checked == 5


# ----------------------------------------------------------------------------- lifting by hand (issue 12)


class _WeightsRenderer:
    """A 2x2 view whose blend weights W [N, HW] are given: lift(values) = (W @ values, W.sum(1)),
    as `render.sparse.lift` is for a frozen view. The camera looks down +z; no centre lands in it."""

    width, height = 2, 2

    def __init__(self, weights, probs):
        self.W = torch.tensor(weights, dtype=torch.float32)
        self.probs = torch.tensor(probs, dtype=torch.float32)
        self.viewmat = torch.eye(4)
        self.K = torch.tensor([[1.0, 0, 1], [0, 1.0, 1], [0, 0, 1]])

    def features(self, per_gaussian):
        return self.probs

    def lift(self, values):
        return self.W @ values, self.W.sum(1)


def test_lift_evidence_sums_blend_weights_over_views_and_scores_divide_by_them():
    # Gaussian 0: weight 1 at a p=0.2 pixel in view a, 3 at a p=1.0 pixel in view b -> (0.2 + 3) / 4 = 0.8
    # Gaussian 1: weight 0.5 at p=0.6 (view a) only -> 0.6; Gaussian 2: no weight anywhere -> 0, support 0
    probs_a = [[0.2], [0.6], [0.9], [0.9]]
    probs_b = [[1.0], [0.0], [0.0], [0.0]]
    W_a = [[1.0, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 0, 0]]
    W_b = [[3.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    views = [type("V", (), {"renderer": _WeightsRenderer(W_a, probs_a)})(), type("V", (), {"renderer": _WeightsRenderer(W_b, probs_b)})()]
    means = torch.tensor([[0.0, 0.0, -1.0]] * 3)  # behind the camera: no X-ray votes
    ev = lift_evidence(_IdentityModel(1), views, means)
    assert ev.blend_weight.tolist() == pytest.approx([4.0, 0.5, 0.0], abs=1e-5)
    assert ev.blend_sum[:, 0].tolist() == pytest.approx([3.2, 0.3, 0.0], abs=1e-5)
    assert ev.xray_count.tolist() == [0.0, 0.0, 0.0]
    scores, support = evidence_scores(ev, 0.01)
    assert scores[:, 0].tolist() == pytest.approx([0.8, 0.6, 0.0], abs=1e-5)
    assert support.tolist() == pytest.approx([4.0, 0.5, 0.0], abs=1e-6)


def test_evidence_scores_divide_each_gaussian_by_its_own_total_weight():
    # the same ratio 0.5 at very different weights; the X-ray weight b = 0.1 * median(seen weights 2, 8, 20) = 0.8
    ev = evidence(blend_sum=[[1.0, 2.0], [4.0, 8.0], [10.0, 0.0]], blend_weight=[2, 8, 20],
                  xray_sum=[[1.0, 0.0], [0.0, 0.0], [5.0, 5.0]], xray_count=[1, 0, 10])
    scores, support = evidence_scores(ev, 0.0)
    np.testing.assert_allclose(scores, [[0.5, 1.0], [0.5, 1.0], [0.5, 0.0]], atol=1e-6)
    scores, support = evidence_scores(ev, 0.1)
    b = 0.8
    assert support.tolist() == pytest.approx([2 + b, 8, 20 + 10 * b], rel=1e-6)
    assert scores[0].tolist() == pytest.approx([(1 + b) / (2 + b), 2 / (2 + b)], rel=1e-5)
    assert scores[2].tolist() == pytest.approx([(10 + 5 * b) / (20 + 10 * b), 5 * b / (20 + 10 * b)], rel=1e-5)


def test_fill_unseen_takes_the_mean_of_the_nearest_seen_neighbours():
    # seen Gaussians on the x axis at 0, 1, 2, 10 with scores 0.2, 0.6, 0.9, 1.0 (query 0) and their
    # complements (query 1); unseen ones (rows 0 and 3, among the seen ones) at x = 0.4 (nearest
    # seen: 0 and 1) and x = 9 (10 and 2)
    means = np.array([[0.4, 0, 0], [0, 0, 0], [1, 0, 0], [9, 0, 0], [2, 0, 0], [10, 0, 0]], np.float32)
    s = np.array([0.77, 0.2, 0.6, 0.77, 0.9, 1.0], np.float32)
    scores = np.c_[s, 1 - s]
    visibility = np.array([0, 1, 1, 0, 1, 1], np.float32)
    seen, unseen = [1, 2, 4, 5], [0, 3]
    filled = fill_unseen(scores, visibility, means, neighbours=2)
    np.testing.assert_array_equal(filled[seen], scores[seen])  # seen ones keep their own scores
    assert filled[0].tolist() == pytest.approx([0.4, 0.6], abs=1e-6)
    assert filled[3].tolist() == pytest.approx([0.95, 0.05], abs=1e-6)
    assert scores[0, 0] == pytest.approx(0.77)  # the input is not written to
    one = fill_unseen(scores, visibility, means, neighbours=1)
    assert one[0].tolist() == pytest.approx([0.2, 0.8]) and one[3].tolist() == pytest.approx([1.0, 0.0])
    # no neighbours asked for, or fewer seen than asked: unseen ones score 0
    assert fill_unseen(scores, visibility, means, neighbours=0)[unseen].tolist() == [[0, 0], [0, 0]]
    assert fill_unseen(scores, visibility, means, neighbours=5)[unseen].tolist() == [[0, 0], [0, 0]]
    # exactly as many seen as asked for is enough
    assert fill_unseen(scores, visibility, means, neighbours=4)[0, 0] == pytest.approx((0.2 + 0.6 + 0.9 + 1.0) / 4)


def test_fill_unseen_threshold_is_the_visibility_constant():
    from splatseg.train.lifting import UNSEEN_VISIBILITY

    means = np.array([[0, 0, 0], [1, 0, 0], [0.2, 0, 0]], np.float32)
    scores = np.array([[0.8], [0.4], [0.1]], np.float32)
    just_seen = fill_unseen(scores, np.array([1, 1, UNSEEN_VISIBILITY], np.float32), means, neighbours=1)
    assert just_seen[2, 0] == pytest.approx(0.1)  # at the constant it counts as seen
    unseen = fill_unseen(scores, np.array([1, 1, UNSEEN_VISIBILITY * 0.5], np.float32), means, neighbours=1)
    assert unseen[2, 0] == pytest.approx(0.8)


def test_centre_pixels_at_the_image_edges_and_with_a_moved_camera():
    from splatseg.train.lifting import centre_pixels

    W, H = 8, 6
    K = torch.tensor([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 1]])  # principal point at the top-left corner
    viewmat = torch.eye(4)
    viewmat[:3, 3] = torch.tensor([0.0, 0.0, 1.0])  # the camera one unit behind the world origin
    # camera-frame points (x, y, z) -> pixel (10 x / z, 10 y / z); world = camera - (0, 0, 1)
    cam = torch.tensor([
        [0.0, 0.0, 1.0],  # (0, 0): the first pixel, inside
        [0.79, 0.59, 1.0],  # (7.9, 5.9): the last pixel, inside
        [0.5, 0.1, 0.625],  # u = 8 = width exactly: outside
        [0.1, 0.375, 0.625],  # v = 6 = height exactly: outside
        [-0.01, 0.1, 1.0],  # u < 0: outside
        [0.1, -0.01, 1.0],  # v < 0: outside
        [5.0, 5.0, 1.0],  # far outside to the bottom right
    ])
    pix, inside = centre_pixels(cam - torch.tensor([0.0, 0.0, 1.0]), viewmat, K, W, H)
    assert inside.tolist() == [True, True, False, False, False, False, False]
    assert pix[0].item() == 0 and pix[1].item() == 5 * W + 7
    assert ((pix >= 0) & (pix < W * H)).all()  # outside ones are clamped to a valid index
    _, near = centre_pixels(torch.tensor([[0.0, 0.0, 1e-2], [0.0, 0.0, 0.0101]]), torch.eye(4), K, W, H)
    assert near.tolist() == [False, True]  # in front means z > 1e-2


def test_evidence_scores_edge_cases():
    from splatseg.train.lifting import UNSEEN_VISIBILITY

    # nothing seen at all: votes have no weight to borrow, every score is 0
    ev = evidence(blend_sum=[[0.0], [0.0]], blend_weight=[0, 0], xray_sum=[[3.0], [1.0]], xray_count=[4, 2])
    scores, support = evidence_scores(ev, 0.5)
    assert scores.tolist() == [[0.0], [0.0]] and support.tolist() == [0.0, 0.0]
    assert scores.dtype == np.float32 and support.dtype == np.float32
    # a weight exactly at UNSEEN_VISIBILITY does not count as seen for the X-ray weight's median
    edge = np.float32(UNSEEN_VISIBILITY)
    ev = evidence(blend_sum=[[0.0], [0.0], [5.0]], blend_weight=[edge, edge, 10.0], xray_sum=[[1.0], [0.0], [0.0]], xray_count=[1, 0, 0])
    _, support = evidence_scores(ev, 0.1)
    assert support[0] == pytest.approx(edge + 0.1 * 10.0)  # median over the one seen Gaussian (10), not 0.001
    # inconsistent evidence is clipped into [0, 1]
    ev = evidence(blend_sum=[[8.0, -1.0]], blend_weight=[4.0], xray_sum=[[0.0, 0.0]], xray_count=[0])
    scores, _ = evidence_scores(ev, 0.0)
    assert scores.tolist() == [[1.0, 0.0]]


def test_lift_evidence_composites_the_models_features_with_any_query_count():
    """5 Gaussians, K = 2 queries over D = 3 features: shapes must not be mixed up."""

    class Model:
        def __init__(self):
            self.features = torch.tensor([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0], [4.0, 4.0, 0], [-4.0, -4.0, 0]])
            self.queries = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])

        def logits(self, fmap):
            return self.queries @ fmap.T  # [K, HW]

    class OnePerPixel:
        """A 1x5 view whose pixel p shows Gaussian p alone (blend weight 1)."""

        width, height = 5, 1

        def __init__(self):
            self.viewmat, self.K = torch.eye(4), torch.eye(3)

        def features(self, per_gaussian):
            return per_gaussian.clone()

        def lift(self, values):
            return values.clone(), torch.ones(values.shape[0])

    model = Model()
    means = torch.tensor([[0.0, 0.0, -1.0]] * 5)
    ev = lift_evidence(model, [type("V", (), {"renderer": OnePerPixel()})()], means)
    assert ev.blend_sum.shape == (5, 2) and ev.blend_sum.dtype == np.float32 and ev.blend_weight.dtype == np.float32
    s = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(ev.blend_sum, [[s(4), s(0)], [s(0), s(4)], [s(0), s(0)], [s(4), s(4)], [s(-4), s(-4)]], rtol=1e-6)
    assert ev.blend_weight.tolist() == [1.0] * 5 and ev.xray_count.tolist() == [0.0] * 5


def test_quantise_rounds_to_uint8_queries_first():
    from splatseg.train.lifting import quantise

    scores = np.array([[0.0, 1.0], [0.2, 0.999], [1.0, 0.001], [1.2, -0.1], [0.6, 0.4]], np.float32)  # [N=5, K=2]
    q = quantise(scores)
    assert q.dtype == np.uint8 and q.shape == (2, 5) and q.flags["C_CONTIGUOUS"]
    assert q.tolist() == [[0, 51, 255, 255, 153], [255, 255, 0, 0, 102]]
