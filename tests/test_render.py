"""Rendering backend: the torch rasteriser against a naive float64 per-pixel reference (forward and
gradients), SH, the frozen-geometry cache, input checks, and gsplat parity on CUDA."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from splatseg.render import blend_weights, composite, lift, render
from splatseg.render.sh import sh_to_rgb

W, H = 24, 20


# ----------------------------------------------------------------------------- scenes
def rot_y(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]], dtype=torch.float64)


def make_cameras(dtype=torch.float64):
    """Two cameras looking at the box around (0, 0, 3): one at the origin, one turned 20 deg."""
    view0 = torch.eye(4, dtype=torch.float64)
    view1 = torch.eye(4, dtype=torch.float64)
    view1[:3, :3] = rot_y(-20.0)
    center = torch.tensor([1.0, -0.2, 0.3], dtype=torch.float64)
    view1[:3, 3] = -view1[:3, :3] @ center
    K0 = torch.tensor([[22.0, 0.0, W / 2], [0.0, 21.0, H / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    K1 = torch.tensor([[25.0, 0.0, W / 2 + 1.3], [0.0, 24.0, H / 2 - 0.7], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return torch.stack([view0, view1]).to(dtype), torch.stack([K0, K1]).to(dtype)


def make_scene(seed: int, n: int = 30, d: int = 3, dtype=torch.float64):
    """Random Gaussians around (0, 0, 3), some off-screen, two behind the camera, one inside near."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([0.7, 0.55, 0.5], dtype=torch.float64)
    means[:, 2] += 3.0
    means[0] = torch.tensor([0.3, 0.1, -1.0])  # behind camera 0
    means[1] = torch.tensor([-0.2, 0.0, 0.005])  # closer than the near plane of camera 0
    means[2] = torch.tensor([1.9, 0.2, 3.0])  # centre off-screen in camera 0, tail on screen
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.exp(torch.empty(n, 3, dtype=torch.float64).uniform_(-2.2, -0.9, generator=g))
    opacities = torch.empty(n, dtype=torch.float64).uniform_(0.5, 0.99, generator=g)
    means[3] = torch.tensor([0.5 * 3.0 / 22.0, 0.5 * 3.0 / 21.0, 3.0])  # centred on pixel (12, 10) of camera 0
    opacities[3] = 0.9995  # so alpha hits the 0.999 cap there
    opacities[4] = 0.002  # below 1/255: culled
    scales[5:7] = torch.tensor([[0.9, 0.02, 0.03], [0.03, 0.7, 0.02]])  # needles: thin, tilted ellipses on screen
    colors = torch.rand(n, d, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors)]


# ----------------------------------------------------------------------------- naive reference
def reference_render(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near=0.01, far=1e10, eps2d=0.3, backgrounds=None):
    """Every pixel against every Gaussian, front to back, with gsplat's alpha/transmittance rules."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    qw, qx, qy, qz = q.unbind(-1)
    rot = torch.stack(
        [
            torch.stack([1 - 2 * (qy**2 + qz**2), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy)], -1),
            torch.stack([2 * (qx * qy + qw * qz), 1 - 2 * (qx**2 + qz**2), 2 * (qy * qz - qw * qx)], -1),
            torch.stack([2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx**2 + qy**2)], -1),
        ],
        -2,
    )
    cov3d = rot @ torch.diag_embed(scales**2) @ rot.transpose(-1, -2)
    jj, ii = torch.meshgrid(torch.arange(width, dtype=means.dtype), torch.arange(height, dtype=means.dtype), indexing="xy")
    pix = torch.stack([jj.reshape(-1), ii.reshape(-1)], -1) + 0.5  # [HW, 2], row-major
    images, alphas, depths, all_means2d, all_radii = [], [], [], [], []
    for c in range(viewmats.shape[0]):
        Rc, tc = viewmats[c, :3, :3], viewmats[c, :3, 3]
        mc = means @ Rc.T + tc
        z = mc[:, 2]
        valid = (z >= near) & (z <= far) & (opacities >= 1 / 255)
        zs = torch.where(valid, z, torch.ones_like(z))
        fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
        u = torch.clamp(mc[:, 0] / zs, -(cx / fx + 0.15 * width / fx), (width - cx) / fx + 0.15 * width / fx)
        v = torch.clamp(mc[:, 1] / zs, -(cy / fy + 0.15 * height / fy), (height - cy) / fy + 0.15 * height / fy)
        zero = torch.zeros_like(z)
        J = torch.stack([torch.stack([fx / zs, zero, -fx * u / zs], -1), torch.stack([zero, fy / zs, -fy * v / zs], -1)], -2)
        cov2d = J @ Rc @ cov3d @ Rc.T @ J.transpose(-1, -2) + eps2d * torch.eye(2, dtype=means.dtype)
        conic = torch.linalg.inv(cov2d)
        means2d = torch.stack([fx * mc[:, 0] / zs + cx, fy * mc[:, 1] / zs + cy], -1)
        if means2d.requires_grad:
            means2d.retain_grad()
        all_means2d.append(means2d)
        extent = torch.sqrt(2 * torch.log(torch.clamp(opacities * 255, min=1.0))).clamp(max=3.33)
        all_radii.append(torch.where(valid[:, None], torch.ceil(extent[:, None] * cov2d.diagonal(dim1=-2, dim2=-1).sqrt()), 0.0))

        d = means2d[None] - pix[:, None]  # [HW, N, 2]
        sigma = 0.5 * torch.einsum("pni,nij,pnj->pn", d, conic, d)
        alpha = torch.clamp_max(opacities * torch.exp(-sigma), 0.999)
        ok = valid & (sigma >= 0) & (alpha >= 1 / 255)
        order = torch.argsort(z)
        alpha, ok = alpha[:, order], ok[:, order]
        a = torch.where(ok, alpha, torch.zeros_like(alpha))
        with torch.no_grad():
            keep = ok & (torch.cumprod(1 - a, dim=1) > 1e-4)  # gsplat stops before T drops to <= 1e-4
        a = torch.where(keep, a, torch.zeros_like(a))
        trans = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), 1 - a[:, :-1]], 1), 1)
        w = a * trans  # [HW, N] blend weights, depth order
        acc = w.sum(1, keepdim=True)
        img = w @ colors[order]
        if backgrounds is not None:
            img = img + backgrounds[c] * (1 - acc)
        images.append(img.reshape(height, width, -1))
        alphas.append(acc.reshape(height, width, 1))
        depths.append(((w @ z[order][:, None]) / acc.clamp(min=1e-10)).reshape(height, width, 1))
    return torch.stack(images), torch.stack(alphas), torch.stack(depths), all_means2d, torch.stack(all_radii)


def leaves(tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


# ----------------------------------------------------------------------------- forward + gradients
@pytest.mark.parametrize("d", [3, 16])
def test_forward_and_gradients_match_reference(d):
    scene = make_scene(seed=d, d=d)
    viewmats, Ks = make_cameras()
    ours_in, ref_in = leaves(scene), leaves(scene)
    out = render(*ours_in, viewmats, Ks, W, H, backend="torch")
    ref_colors, ref_alphas, ref_depths, ref_means2d, ref_radii = reference_render(*ref_in, viewmats, Ks, W, H)
    assert (ref_alphas > 0.99).any(), "scene should have opaque pixels"

    torch.testing.assert_close(out.colors, ref_colors, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(out.alphas, ref_alphas, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(out.depths, ref_depths, atol=1e-9, rtol=1e-9)
    visible = out.meta["radii"] > 0
    assert not visible[0, :2].any() and not visible[:, 4].any()  # behind / inside near / opacity < 1/255
    torch.testing.assert_close(out.meta["radii"][visible].double(), ref_radii.amax(-1)[visible])

    g = torch.Generator().manual_seed(100 + d)
    wc, wa, wd = (torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (ref_colors, ref_alphas, ref_depths))
    out.meta["means2d"].retain_grad()
    ((out.colors * wc).sum() + (out.alphas * wa).sum() + (out.depths * wd).sum()).backward()
    ((ref_colors * wc).sum() + (ref_alphas * wa).sum() + (ref_depths * wd).sum()).backward()
    for name, ours, ref in zip(["means", "quats", "scales", "opacities", "colors"], ours_in, ref_in):
        assert ref.grad.abs().max() > 0, name
        torch.testing.assert_close(ours.grad, ref.grad, atol=1e-8, rtol=1e-7, msg=lambda m: f"d{name}: {m}")
    for c in range(2):  # pixel-space gradients for densification
        vis = visible[c]
        torch.testing.assert_close(out.meta["means2d"].grad[c][vis], ref_means2d[c].grad[vis], atol=1e-8, rtol=1e-7)


def test_transmittance_cutoff_is_exercised():
    """Dense opaque stack: pixels stop at T <= 1e-4 exactly as the reference (gsplat) does."""
    n = 12
    means = torch.zeros(n, 3, dtype=torch.float64)
    means[:, 2] = torch.linspace(2.0, 3.0, n, dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).repeat(n, 1)
    scales = torch.full((n, 3), 0.3, dtype=torch.float64)
    opacities = torch.full((n,), 0.95, dtype=torch.float64)
    colors = torch.rand(n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    viewmats, Ks = make_cameras()
    ours_in, ref_in = leaves([means, quats, scales, opacities, colors]), leaves([means, quats, scales, opacities, colors])
    out = render(*ours_in, viewmats, Ks, W, H)
    ref = reference_render(*ref_in, viewmats, Ks, W, H)
    bw = blend_weights(means, quats, scales, opacities, viewmats[0], Ks[0], W, H)
    centre = (H // 2) * W + W // 2
    assert int((bw.pixel == centre).sum()) == 3  # 0.95 x 3 leaves T = 1.25e-4; the 4th would cut it below 1e-4
    torch.testing.assert_close(out.colors, ref[0], atol=1e-10, rtol=1e-9)
    (out.colors.sum() + out.alphas.sum()).backward()
    (ref[0].sum() + ref[1].sum()).backward()
    for ours, theirs in zip(ours_in, ref_in):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-8, rtol=1e-7)


def test_float32_close_to_float64_reference():
    scene = make_scene(seed=7, d=3)
    viewmats, Ks = make_cameras()
    out = render(*[t.float() for t in scene], viewmats.float(), Ks.float(), W, H)
    ref_colors, ref_alphas, *_ = reference_render(*scene, viewmats, Ks, W, H)
    assert out.colors.dtype == torch.float32
    torch.testing.assert_close(out.colors.double(), ref_colors, atol=2e-4, rtol=0)
    torch.testing.assert_close(out.alphas.double(), ref_alphas, atol=2e-4, rtol=0)


def test_chunked_pairs_are_exact():
    """Tiny chunks (many row bands in selection, many pixel chunks in backward) change nothing."""
    scene = make_scene(seed=3, d=5)
    viewmats, Ks = make_cameras()
    a_in, b_in = leaves(scene), leaves(scene)
    a = render(*a_in, viewmats, Ks, W, H)
    b = render(*b_in, viewmats, Ks, W, H, pairs_per_chunk=60)
    torch.testing.assert_close(a.colors, b.colors, atol=1e-12, rtol=0)
    torch.testing.assert_close(a.depths, b.depths, atol=1e-12, rtol=0)
    (a.colors.sum() + a.depths.sum()).backward()
    (b.colors.sum() + b.depths.sum()).backward()
    for x, y in zip(a_in, b_in):
        torch.testing.assert_close(x.grad, y.grad, atol=1e-10, rtol=1e-9)


def test_backgrounds():
    scene = make_scene(seed=11, d=4)
    viewmats, Ks = make_cameras()
    bg = torch.tensor([[0.1, 0.5, 0.9, 2.0], [1.0, 0.0, 0.3, -1.0]], dtype=torch.float64)
    plain = render(*scene, viewmats, Ks, W, H)
    with_bg = render(*scene, viewmats, Ks, W, H, backgrounds=bg)
    torch.testing.assert_close(with_bg.colors, plain.colors + bg[:, None, None, :] * (1 - plain.alphas))
    torch.testing.assert_close(with_bg.depths, plain.depths)
    torch.testing.assert_close(with_bg.colors, reference_render(*scene, viewmats, Ks, W, H, backgrounds=bg)[0])


def test_empty_view():
    means, quats, scales, opacities, colors = make_scene(seed=1)
    means = means.clone()
    means[:, 2] = -5.0  # everything behind both cameras
    viewmats, Ks = make_cameras()
    out = render(means, quats, scales, opacities, colors, viewmats, Ks, W, H)
    assert out.colors.abs().max() == 0 and out.alphas.abs().max() == 0 and out.depths.abs().max() == 0
    assert (out.meta["radii"] == 0).all()


# ----------------------------------------------------------------------------- geometry
def test_single_gaussian_lands_where_K_viewmat_puts_it():
    point = torch.tensor([0.4, -0.3, 2.5])
    view = torch.eye(4)
    view[:3, :3] = rot_y(10.0).float()
    view[:3, 3] = torch.tensor([0.1, 0.2, 0.5])
    K = torch.tensor([[60.0, 0.0, 32.0], [0.0, 60.0, 24.0], [0.0, 0.0, 1.0]])
    cam = view[:3, :3] @ point + view[:3, 3]
    uvw = K @ cam
    u, v = (uvw[:2] / uvw[2]).tolist()
    out = render(
        point[None], torch.tensor([[1.0, 0.0, 0.0, 0.0]]), torch.full((1, 3), 0.02), torch.tensor([0.9]),
        torch.ones(1, 1), view[None], K[None], 64, 48,
    )  # fmt: skip
    torch.testing.assert_close(out.meta["means2d"][0, 0], torch.tensor([u, v]))
    row, col = divmod(int(out.alphas[0, ..., 0].argmax()), 64)
    assert (col, row) == (math.floor(u), math.floor(v))
    torch.testing.assert_close(out.depths[0, row, col, 0], cam[2])
    assert out.meta["radii"][0, 0] > 0


# ----------------------------------------------------------------------------- spherical harmonics
def direct_sh(coeffs, dirs):
    """Real SH up to degree 3 written out with their normalisation constants (gsplat's signs)."""
    x, y, z = torch.nn.functional.normalize(dirs, dim=-1).unbind(-1)
    pi = math.pi
    k1 = math.sqrt(3 / (4 * pi))
    basis = [
        torch.full_like(x, 1 / (2 * math.sqrt(pi))),
        -k1 * y, k1 * z, -k1 * x,
        math.sqrt(15 / (4 * pi)) * x * y,
        -math.sqrt(15 / (4 * pi)) * y * z,
        math.sqrt(5 / (16 * pi)) * (3 * z * z - 1),
        -math.sqrt(15 / (4 * pi)) * x * z,
        math.sqrt(15 / (16 * pi)) * (x * x - y * y),
        -math.sqrt(35 / (32 * pi)) * (3 * x * x - y * y) * y,
        math.sqrt(105 / (4 * pi)) * x * y * z,
        -math.sqrt(21 / (32 * pi)) * y * (5 * z * z - 1),
        math.sqrt(7 / (16 * pi)) * (5 * z**3 - 3 * z),
        -math.sqrt(21 / (32 * pi)) * x * (5 * z * z - 1),
        math.sqrt(105 / (16 * pi)) * z * (x * x - y * y),
        -math.sqrt(35 / (32 * pi)) * (x * x - 3 * y * y) * x,
    ]  # fmt: skip
    basis = torch.stack(basis, -1)
    return [(basis[:, : (deg + 1) ** 2, None] * coeffs[:, : (deg + 1) ** 2]).sum(1) for deg in range(4)]


def test_sh_matches_direct_formula_and_render():
    g = torch.Generator().manual_seed(5)
    means, quats, scales, opacities, _ = make_scene(seed=5)
    coeffs = torch.randn(means.shape[0], 16, 3, generator=g, dtype=torch.float64) * 0.5
    viewmats, Ks = make_cameras()
    center = torch.linalg.inv(viewmats[1])[:3, 3]
    expected = direct_sh(coeffs, means - center)
    for deg in range(4):
        torch.testing.assert_close(sh_to_rgb(deg, coeffs, means - center), expected[deg])
        via_sh = render(means, quats, scales, opacities, coeffs, viewmats[1:], Ks[1:], W, H, sh_degree=deg)
        rgb = torch.clamp_min(expected[deg] + 0.5, 0.0)
        plain = render(means, quats, scales, opacities, rgb, viewmats[1:], Ks[1:], W, H)
        torch.testing.assert_close(via_sh.colors, plain.colors)


def test_sh_render_gradients_match_reference():
    """SH colours per camera (view direction = mean - camera centre), gradients through the direction."""
    means, quats, scales, opacities, _ = make_scene(seed=6)
    coeffs = torch.randn(means.shape[0], 16, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 0.4
    viewmats, Ks = make_cameras()
    ours_in, ref_in = leaves([means, quats, scales, opacities, coeffs]), leaves([means, quats, scales, opacities, coeffs])
    out = render(*ours_in, viewmats, Ks, W, H, sh_degree=3)
    weights = torch.randn(out.colors.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (out.colors * weights).sum().backward()
    ref_loss = 0.0
    for c in range(2):
        center = torch.linalg.inv(viewmats[c])[:3, 3]
        rgb = torch.clamp_min(direct_sh(ref_in[4], ref_in[0] - center)[3] + 0.5, 0.0)
        ref_colors = reference_render(*ref_in[:4], rgb, viewmats[c : c + 1], Ks[c : c + 1], W, H)[0]
        torch.testing.assert_close(out.colors[c : c + 1], ref_colors, atol=1e-10, rtol=1e-9)
        ref_loss = ref_loss + (ref_colors * weights[c : c + 1]).sum()
    ref_loss.backward()
    for name, ours, ref in zip(["means", "quats", "scales", "opacities", "sh"], ours_in, ref_in):
        torch.testing.assert_close(ours.grad, ref.grad, atol=1e-8, rtol=1e-7, msg=lambda m: f"d{name}: {m}")


# ----------------------------------------------------------------------------- frozen geometry
def test_composite_equals_render_and_lift_is_its_transpose():
    means, quats, scales, opacities, _ = make_scene(seed=9, dtype=torch.float32)
    viewmats, Ks = make_cameras(torch.float32)
    features = torch.randn(means.shape[0], 16, generator=torch.Generator().manual_seed(1))
    bw = blend_weights(means, quats, scales, opacities, viewmats[1], Ks[1], W, H)
    assert bw.pixel.dtype == torch.int32 and bw.gaussian.dtype == torch.int32
    assert bool((bw.pixel[1:] >= bw.pixel[:-1]).all())
    rendered = render(means, quats, scales, opacities, features, viewmats[1:], Ks[1:], W, H).colors[0]
    f = features.clone().requires_grad_(True)
    fmap = composite(bw, f)
    torch.testing.assert_close(fmap, rendered, atol=1e-6, rtol=1e-5)

    v = torch.randn(H, W, 16, generator=torch.Generator().manual_seed(2))
    sums, weight_sums = lift(bw, v, means.shape[0])
    torch.testing.assert_close((fmap * v).sum(), (features * sums).sum(), atol=1e-4, rtol=1e-5)
    (fmap * v).sum().backward()
    torch.testing.assert_close(f.grad, sums, atol=1e-6, rtol=1e-5)
    ones_sums, _ = lift(bw, torch.ones(H * W, 1), means.shape[0])
    torch.testing.assert_close(weight_sums, ones_sums[:, 0], atol=1e-6, rtol=1e-5)
    alphas = render(means, quats, scales, opacities, features[:, :1], viewmats[1:], Ks[1:], W, H).alphas[0]
    torch.testing.assert_close(composite(bw, torch.ones(means.shape[0], 1)), alphas, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- input checks
def test_bad_inputs_raise_value_errors():
    means, quats, scales, opacities, colors = make_scene(seed=2)
    viewmats, Ks = make_cameras()
    n = means.shape[0]
    cases = [
        (dict(means=means[:, :2]), "means must be"),
        (dict(quats=quats[:-1]), "quats must be"),
        (dict(opacities=opacities[:, None]), "opacities must be"),
        (dict(colors=colors[:-1]), "colors must be"),
        (dict(Ks=Ks[:1]), "Ks must be"),
        (dict(viewmats=viewmats[:, :3]), "viewmats must be"),
        (dict(backgrounds=torch.zeros(2, 5, dtype=torch.float64)), "backgrounds must be"),
        (dict(sh_degree=4, colors=torch.zeros(n, 25, 3)), "sh_degree must be"),
        (dict(sh_degree=2, colors=torch.zeros(n, 4, 3)), "SH coefficients"),
        (dict(backend="cuda"), "backend must be"),
        (dict(width=0), "width and height"),
    ]
    if not torch.cuda.is_available():
        cases.append((dict(backend="gsplat"), "needs CUDA tensors"))
    base = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmats, Ks=Ks, width=W, height=H)
    for change, message in cases:
        kwargs = {**base, **change}
        positional = [kwargs.pop(k) for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks", "width", "height")]
        with pytest.raises(ValueError, match=message):
            render(*positional, **kwargs)
    with pytest.raises(ValueError, match="one view"):
        blend_weights(means, quats, scales, opacities, viewmats, Ks, W, H)
    bw = blend_weights(means, quats, scales, opacities, viewmats[0], Ks[0], W, H)
    with pytest.raises(ValueError, match="only 3 were given"):
        composite(bw, torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="features must be"):
        composite(bw, torch.zeros(n, dtype=torch.float64))
    with pytest.raises(ValueError, match="values must be"):
        lift(bw, torch.zeros(H, W + 1, 2, dtype=torch.float64), n)


def test_import_and_cpu_render_do_not_load_gsplat():
    code = (
        "import sys, torch; from splatseg.render import render; "
        "render(torch.zeros(1, 3) + torch.tensor([0., 0., 2.]), torch.tensor([[1., 0, 0, 0]]), torch.full((1, 3), .1), "
        "torch.tensor([.5]), torch.ones(1, 3), torch.eye(4)[None], torch.tensor([[[10., 0, 4], [0, 10, 4], [0, 0, 1]]]), 8, 8); "
        "assert 'gsplat' not in sys.modules, 'gsplat imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ----------------------------------------------------------------------------- gsplat parity
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("sh_degree", [None, 3])
def test_gsplat_parity_forward_and_gradients(sh_degree):
    means, quats, scales, opacities, colors = make_scene(seed=21, n=200, d=16, dtype=torch.float32)
    if sh_degree is not None:
        colors = torch.randn(means.shape[0], 16, 3, generator=torch.Generator().manual_seed(3)) * 0.3
    viewmats, Ks = make_cameras(torch.float32)
    width, height = 64, 48
    Ks = Ks.clone()
    Ks[:, :2] *= 2.5
    bg = torch.rand(2, 3 if sh_degree is not None else 16, generator=torch.Generator().manual_seed(4))
    results = []
    for device, backend in (("cuda", "gsplat"), ("cpu", "torch"), ("cuda", "torch")):
        inputs = [t.to(device).requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
        out = render(
            *inputs, viewmats.to(device), Ks.to(device), width, height,
            sh_degree=sh_degree, backgrounds=bg.to(device), backend=backend,
        )  # fmt: skip
        out.meta["means2d"].retain_grad()
        g = torch.Generator().manual_seed(8)
        wc, wa, wd = (torch.randn(t.shape, generator=g).to(device) for t in (out.colors, out.alphas, out.depths))
        ((out.colors * wc).sum() + (out.alphas * wa).sum() + (out.depths * wd).sum()).backward()
        results.append(
            [out.colors, out.alphas, out.depths, out.meta["radii"], out.meta["means2d"].grad] + [t.grad for t in inputs]
        )
    names = ["colors", "alphas", "depths", "radii", "means2d.grad", "means.grad", "quats.grad", "scales.grad", "opacities.grad", "colors.grad"]
    for other in results[1:]:
        for name, a, b in zip(names, results[0], other):
            a, b = a.detach().cpu().double(), b.detach().cpu().double()
            if name == "radii":  # gsplat's fast-math log/sqrt may round a radius to the next pixel
                assert torch.equal(a > 0, b > 0) and (a - b).abs().max() <= 1
                continue
            scale = max(a.abs().max().item(), 1e-6)
            torch.testing.assert_close(b, a, atol=2e-3 * scale, rtol=2e-3, msg=lambda m: f"{name}: {m}")
