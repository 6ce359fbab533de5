"""A scene made outside the project (issue 12): splats, cameras and images written by hand, checked
against a per-pixel reference worked out in closed form, so a convention bug applied the same way in
the project's scene generator and its renderer (an activation, an axis flip, a pixel-centre offset,
a quaternion order) cannot hide.

The splats are flat, nearly opaque Gaussian discs lying in planes z = const, and every camera looks
straight down +z (one rolled 90 degrees about its axis). A perspective camera maps such a plane to
the image by a similarity (x, y) -> f (x, y) / z + c, so each disc's image is exactly a 2D Gaussian:
centre f X / z + c, covariance (f / z)^2 times the disc's in-plane covariance (in camera axes),
plus gsplat's 0.3 px^2 screen dilation. Alpha and compositing follow 3DGS / gsplat as documented
(splatseg/render/torch_raster.py): alpha = min(0.999, opacity exp(-q / 2)), skipped below 1/255,
front to back by depth, a pixel stops before the Gaussian that would take its transmittance to
<= 1e-4; pixel centres at (col + 0.5, row + 0.5). The PLY holds raw values (logit opacity, log
scales, SH DC colour, w x y z quaternions) computed here from the physical ones; transforms.json
holds OpenGL camera-to-world matrices written out by hand.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from plyfile import PlyData, PlyElement

from splatseg.data import load_scene
from splatseg.io.ply import read_ply
from splatseg.render import render

SH_C0 = 0.28209479177387814  # Y_0^0 = 1 / (2 sqrt(pi))
EPS2D = 0.3  # gsplat's screen-space dilation (px^2)
W, H, F, CX, CY = 64, 48, 50.0, 31.0, 25.0

# centre (world), in-plane standard deviations along its own x and y, turn about world z (radians), opacity, rgb
DISCS = [
    ((0.0, 0.0, 4.0), (0.8, 0.4), math.radians(30), 0.9, (1.0, 0.2, 0.1)),  # a wide red disc, turned 30 degrees
    ((-0.6, 0.3, 3.0), (0.3, 0.15), math.radians(-70), 0.8, (0.1, 0.9, 0.2)),  # a green one in front, overlapping it
    ((0.7, -0.5, 6.0), (0.9, 0.9), 0.0, 0.95, (0.2, 0.3, 1.0)),  # a round blue one behind both
]
THIN = 1e-5  # the discs' thickness (standard deviation along z)

# cameras as OpenCV camera-to-world (columns: camera x right, y down, z forward, in world axes) and centre
CAMERAS = {
    "front": (np.eye(3), np.array([0.0, 0.0, 0.0])),
    "rolled": (np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), np.array([0.3, -0.2, 0.5])),
}


def reference_image(R_c2w: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rgb [H, W, 3], alpha [H, W]) in float64 from the module docstring's closed form."""
    cols, rows = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    layers = []
    for xyz, (sx, sy), turn, opacity, rgb in DISCS:
        p = R_c2w.T @ (np.asarray(xyz) - centre)  # camera frame
        z = p[2]
        u, v = F * p[0] / z + CX, F * p[1] / z + CY
        c, s = math.cos(turn), math.sin(turn)
        world = np.array([[c, -s], [s, c]]) @ np.diag([sx * sx, sy * sy]) @ np.array([[c, s], [-s, c]])
        in_plane = R_c2w.T[:2, :2] @ world @ R_c2w.T[:2, :2].T  # in camera x, y (the plane is z = const)
        cov = (F / z) ** 2 * in_plane + EPS2D * np.eye(2)
        inv = np.linalg.inv(cov)
        dx, dy = cols - u, rows - v
        q = inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy
        layers.append((z, np.minimum(0.999, opacity * np.exp(-0.5 * q)), np.asarray(rgb)))
    layers.sort(key=lambda layer: layer[0])
    out = np.zeros((H, W, 3))
    T = np.ones((H, W))
    done = np.zeros((H, W), bool)
    for _, alpha, rgb in layers:
        use = (alpha >= 1 / 255) & ~done
        next_T = T * (1 - alpha)
        stop = use & (next_T <= 1e-4)
        done |= stop
        use &= ~stop
        out += np.where(use, alpha * T, 0.0)[..., None] * rgb
        T = np.where(use, next_T, T)
    return out, 1 - T


def write_scene(root) -> None:
    """splats.ply (reference layout, raw values), transforms.json (OpenGL c2w) and the reference images."""
    n = len(DISCS)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
    table = np.zeros(n, dtype=[(name, "<f4") for name in names])
    for i, (xyz, (sx, sy), turn, opacity, rgb) in enumerate(DISCS):
        table["x"][i], table["y"][i], table["z"][i] = xyz
        for c in range(3):
            table[f"f_dc_{c}"][i] = (rgb[c] - 0.5) / SH_C0
        table["opacity"][i] = math.log(opacity / (1 - opacity))
        table["scale_0"][i], table["scale_1"][i], table["scale_2"][i] = math.log(sx), math.log(sy), math.log(THIN)
        table["rot_0"][i], table["rot_3"][i] = math.cos(turn / 2), math.sin(turn / 2)  # w x y z: a turn about z
    root.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(table, "vertex")], text=False, byte_order="<").write(str(root / "splats.ply"))
    (root / "images").mkdir()
    frames = []
    for name, (R, centre) in CAMERAS.items():
        rgb, _ = reference_image(R, centre)
        Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"{name}.png")
        gl = np.eye(4)
        gl[:3, :3] = R @ np.diag([1.0, -1.0, -1.0])  # OpenGL camera axes: x right, y up, looking down -z
        gl[:3, 3] = centre
        frames.append({"file_path": f"images/{name}.png", "transform_matrix": gl.tolist()})
    meta = {"fl_x": F, "fl_y": F, "cx": CX, "cy": CY, "w": W, "h": H, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def oracle_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle") / "scene"
    write_scene(root)
    return root


def render_views(root) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, rgb [C, H, W, 3], alpha [C, H, W]) rendered by the project from the files alone."""
    cams = load_scene(root).cameras
    p = read_ply(root / "splats.ply").torch_params()
    out = render(p["means"], p["quats"], p["scales"], p["opacities"], p["sh"], torch.from_numpy(cams.viewmats).float(),
                 torch.from_numpy(cams.Ks).float(), int(cams.widths[0]), int(cams.heights[0]), sh_degree=0, backend="torch")
    return list(cams.names), out.colors.numpy().astype(np.float64), out.alphas[..., 0].numpy().astype(np.float64)


def test_the_renderer_reproduces_the_closed_form_reference(oracle_scene):
    names, rgb, alpha = render_views(oracle_scene)
    assert sorted(names) == sorted(CAMERAS)
    for i, name in enumerate(names):
        want_rgb, want_alpha = reference_image(*CAMERAS[name])
        assert want_alpha.max() > 0.85 and (want_alpha < 0.01).any()  # discs and empty background both in view
        np.testing.assert_allclose(alpha[i], want_alpha, atol=2e-4, err_msg=name)
        np.testing.assert_allclose(rgb[i], want_rgb, atol=2e-4, err_msg=name)


def test_the_renderer_reproduces_the_written_photos(oracle_scene):
    names, rgb, _ = render_views(oracle_scene)
    for i, name in enumerate(names):
        photo = np.asarray(Image.open(oracle_scene / "images" / f"{name}.png"), np.float64) / 255
        assert np.abs(np.clip(rgb[i], 0, 1) - photo).max() <= 0.5 / 255 + 2e-4, name

