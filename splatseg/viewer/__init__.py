"""Browser viewer (`splatseg view`): the run's splats in viser, click/text selection, PLY export.

Public API:
    ViewerConfig                      tyro config of `splatseg view`
    run_viewer(cfg, block=True)       starts the server -> ViewerApp (.server, .port, .stop(),
                                      .client_ids(), .selection(client_id), .click, .export)
    ray_feature(means, quats, scales, opacities, features, origin, direction, focal_px) -> [D]
                                      rendered feature along a world ray (picking.py)

Modules: picking (ray -> feature), session (one tab's prompts -> selection), display (splat arrays,
highlight colours), camera (viser <-> splatseg cameras), overlay (server-side renders),
server (viser started behind a Host / Origin check; start failures as one error), app (viser
wiring, per-tab state).
"""

from splatseg.viewer.config import ViewerConfig
from splatseg.viewer.picking import ray_feature

__all__ = ["ViewerConfig", "ViewerApp", "run_viewer", "ray_feature"]


def __getattr__(name):
    # viser is imported only when the app is used, so `--help` and `ray_feature` stay light.
    if name in ("ViewerApp", "run_viewer"):
        from splatseg.viewer import app

        return getattr(app, name)
    raise AttributeError(name)
