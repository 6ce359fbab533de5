"""The viser app behind `splatseg view`: browser events -> `SelectionSession` -> recolour the tab's splats.

Design: every browser tab (viser client) owns
- its splat node, added with `client.scene.add_gaussian_splats` (viser sends it to that tab only),
  so highlighting one tab's selection never recolours another tab's scene;
- its GUI, built with `client.gui` (granularity, threshold, negative-click toggle, clear, text
  prompt, overlay, export), and its `SelectionSession` (prompts + selection + lock);
- optionally a server-rendered background image (`client.scene.set_background_image`).
All of it lives in a `TabState` keyed by client id, created on connect and dropped on disconnect
(viser drops the tab's scene nodes and GUI with the client). A tab costs the splat buffer viser
keeps for its node (32 bytes per Gaussian) plus its selection. Shared and read-only: the field,
the picking tensors, the display arrays, the CLIP encoder. New tabs start at the run's first
training view (`server.initial_camera`, also what viser's "Reset view" returns to).

Clicks come from one scene-level callback (`server.scene.on_click`, plain and Shift): the event's
world ray and the tab's camera (vertical fov, canvas height -> focal length in pixels) go to
`SelectionSession.click`; Shift-click, or any click while "Negative clicks" is on, adds a negative
point. viser runs these callbacks on a thread pool; each session's lock serialises its tab.
Errors are shown in the page (a red notification and the status line); long work (loading the
text model, exports) shows a loading notification. Overlay frames are rendered on camera moves
and selection changes, latest request wins (`_LatestOnly`).

Exports use `splatseg.export.export_selection` on the run's splats file: `RUN/exports/<name>.ply`
(the selection) or `RUN/exports/<name>-rest.ply` (everything else), or the suffix chosen in the tab's
"Format" dropdown (.compressed.ply, .splat, .spz), then the file is sent to the tab as a download;
a name that would write over one of the run's inputs is refused.

Access: `viewer/server.py` starts viser with a Host / Origin check on every HTTP request and
websocket handshake (loopback pages and --allow-origin only; HTTP 403 otherwise).
"Export mesh" fuses the selection into a vertex-coloured triangle mesh with
`splatseg.mesh_command.mesh_mask` (the `splatseg mesh` defaults) and sends `RUN/exports/<name>.glb`
the same way.

SAM-decoder mode (when the run has `imitation.npz`, from `splatseg imitate`): with "Decoder clicks"
on, clicks become 3D prompt points of `viewer.decoder_mode.DecoderTab`, and the tab's background
shows SAM's mask decoded from the embedding rendered for its camera, re-rendered as the camera
moves; "Lift to 3D" aggregates decoder masks from the training views into the tab's selection.
"""

from __future__ import annotations

import re
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import viser

from splatseg.data import load_scene
from splatseg.data.placement import run_splats
from splatseg.export import export_selection
from splatseg.io.formats import OUTPUT_SUFFIXES
from splatseg.mesh_command import mesh_mask
from splatseg.query import CANONICAL_NEGATIVES, DEFAULT_THRESHOLD, QueryError, Selection
from splatseg.run import Field, load_field, refuse_writing_over, run_inputs
from splatseg.semantics.clip import SemanticsError
from splatseg.text_query import TextPrompter, require_text_backend
from splatseg.viewer.camera import look_distance, pose_from_camera, scene_up
from splatseg.viewer.config import ViewerConfig
from splatseg.viewer.decoder_mode import MASK_CHOICES, DecoderTab
from splatseg.viewer.display import Highlighter, SplatArrays
from splatseg.viewer.overlay import OVERLAY_MODES, OverlayRenderer
from splatseg.viewer.picking import PickingTensors, focal_from_fov, ray_render
from splatseg.viewer.server import OriginPolicy, check_bindable, is_loopback, start_viser
from splatseg.viewer.session import ClickResult, SelectionSession

SPLAT_NODE = "/splats"
"""Scene node name of each tab's splats."""

NEGATIVE_MODIFIER = "shift"
"""Keyboard modifier that makes a click negative."""


class _LatestOnly:
    """Runs `fn` on request; requests arriving while it runs collapse into one more run."""

    def __init__(self, fn: Callable[[], None]):
        self._fn = fn
        self._lock = threading.Lock()
        self._pending = False

    def request(self) -> None:
        self._pending = True
        while self._pending:
            if not self._lock.acquire(blocking=False):
                return  # the running call sees the pending flag
            try:
                while self._pending:
                    self._pending = False
                    self._fn()
            finally:
                self._lock.release()


@dataclass
class TabState:
    """Everything one browser tab owns (see module doc)."""

    client: viser.ClientHandle
    session: SelectionSession
    splats: viser.GaussianSplatHandle
    gui: dict = field(default_factory=dict)
    overlay: _LatestOnly | None = None
    decoder: DecoderTab | None = None
    decoder_overlay: _LatestOnly | None = None
    decoder_frames: int = 0
    last_click: ClickResult | None = None
    last_export: tuple[Path, int] | None = None
    overlay_frames: int = 0
    closed: bool = False


class ViewerApp:
    """A running viewer. `server` (viser), `port`; per-tab state through `client_ids()`,
    `session(client_id)` and `selection(client_id)`; `stop()` shuts it down."""

    def __init__(self, cfg: ViewerConfig):
        self.cfg = cfg
        self.policy = OriginPolicy.from_flags(cfg.allow_origin)  # checked first: a bad flag costs nothing
        check_bindable(cfg.host, cfg.port)
        self.field: Field = load_field(cfg.run)
        self.inputs = run_inputs(self.field)
        self.exports_dir = Path(cfg.run) / "exports"
        splats = self.splats = run_splats(self.field)  # the cameras' frame
        self.arrays = SplatArrays.from_splats(splats)
        self.highlighter = Highlighter(self.arrays.rgbs)
        self.picking = PickingTensors.build(splats.means, splats.unit_quats, splats.scales, splats.opacities, self.field.features)
        self.overlay = OverlayRenderer(self.picking, splats.base_rgb, cfg.overlay_max_side)
        self.warnings: list[str] = []
        if not is_loopback(cfg.host):
            self.warnings.append(
                f"--host {cfg.host} is not a loopback address: any program that can reach this machine on port {cfg.port} "
                "can load the scene and drive the viewer; browsers are let in only from loopback pages and --allow-origin "
                f"({', '.join(self.policy.extra_origins) or 'none given'})")
        self.decoder_run, self.lift_views = self._load_decoder(splats)
        self._tabs: dict[int, TabState] = {}
        self._tabs_lock = threading.Lock()
        self._clip = None
        self._clip_lock = threading.Lock()
        self._text = TextPrompter(self.field)

        self.initial_view: str | None = None

        self.server, self.refused = start_viser(cfg.host, cfg.port, self.policy)
        self.port = self.server.get_port()
        self._torch_threads = torch.get_num_threads()
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        try:
            self._set_initial_camera(splats.means)
            self._warm_up()
        except BaseException:
            self.stop()
            raise
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)
        self.server.scene.on_click()(self._on_click)
        self.server.scene.on_click(modifier=NEGATIVE_MODIFIER)(self._on_click)

    # ------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.cfg.host in ("0.0.0.0", "") else self.cfg.host
        return f"http://{host}:{self.port}"

    def client_ids(self) -> list[int]:
        with self._tabs_lock:
            return sorted(self._tabs)

    def session(self, client_id: int) -> SelectionSession:
        return self._tab(client_id).session

    def selection(self, client_id: int) -> Selection | None:
        """The current selection of one tab (None when nothing is selected)."""
        s = self._tab(client_id).session
        with s.lock:
            return s.selection

    def click(self, client_id: int, origin, direction, positive: bool = True) -> ClickResult:
        """Adds a click (world ray) to one tab, as its camera sees it, and recolours that tab."""
        tab = self._tab(client_id)
        cam = tab.client.camera
        result = tab.session.click(origin, direction, focal_from_fov(cam.fov, cam.image_height), positive)
        tab.last_click = result
        self._show(tab)
        return result

    def select_text(self, client_id: int, phrase: str) -> Selection:
        """Selects what a text phrase names in one tab, with CLIPSeg when the run has its cache, else
        with the queries' CLIP vectors (`splatseg.text_query`); QueryError (one line) with neither.
        The selection's `text_backend` says which answered."""
        backend = require_text_backend(self.field)
        tab = self._tab(client_id)
        phrase = phrase.strip()
        if not phrase:
            raise QueryError("type a phrase first")
        if backend == "clipseg":
            with self._clip_lock:  # one CLIPSeg and one index for every tab
                scores = self._text.clipseg_scores(phrase)
            sel = tab.session.set_selection(Selection(mask=scores > tab.session.threshold, scores=scores), f'text "{phrase}" (CLIPSeg)')
        else:
            emb = self._text_embeddings([phrase, *CANONICAL_NEGATIVES])
            sel = tab.session.set_text(phrase, emb[0], emb[1:])
        sel.text_backend = backend
        self._show(tab)
        return sel

    def export(self, client_id: int, invert: bool = False, name: str | None = None, suffix: str | None = None) -> tuple[Path, int]:
        """Writes the tab's selection (or, with `invert`, everything else) to RUN/exports/ with
        `splatseg.export.export_selection`, in the format of `suffix` (default: the tab's "Format"
        choice, .ply); returns (path, rows written)."""
        tab = self._tab(client_id)
        mask = tab.session.mask
        if mask is None:
            raise QueryError("nothing is selected: click an object first")
        stem = _safe_stem(name if name is not None else tab.gui["name"].value)
        suffix = suffix if suffix is not None else tab.gui["format"].value if "format" in tab.gui else ".ply"
        if suffix not in OUTPUT_SUFFIXES:
            raise QueryError(f"unknown export format {suffix!r} (choose from {', '.join(OUTPUT_SUFFIXES)})")
        out = self.exports_dir / (f"{stem}-rest{suffix}" if invert else f"{stem}{suffix}")
        refuse_writing_over(out, self.inputs, flag="export")
        self.exports_dir.mkdir(parents=True, exist_ok=True)
        count = export_selection(self.field.splats_path, ~mask if invert else mask, out).count
        tab.last_export = (out, count)
        return out, count

    def export_mesh(self, client_id: int, name: str | None = None) -> tuple[Path, dict]:
        """Meshes the tab's selection (`splatseg.mesh_command.mesh_mask`, default fusion options) into
        RUN/exports/<name>.glb; returns (path, the summary `splatseg mesh` prints)."""
        tab = self._tab(client_id)
        mask = tab.session.mask
        if mask is None:
            raise QueryError("nothing is selected: click an object first")
        out = self.exports_dir / f"{_safe_stem(name if name is not None else tab.gui['name'].value)}.glb"
        refuse_writing_over(out, self.inputs, flag="export")
        self.exports_dir.mkdir(parents=True, exist_ok=True)
        summary = mesh_mask(self.field, self.splats, mask.copy(), out)
        return out, summary

    def decoder_click(self, client_id: int, origin, direction, positive: bool = True) -> None:
        """Adds a SAM-decoder prompt (world ray) to one tab and asks for its live frame (rendered
        through the tab's latest-only queue, so a frame begun before the click cannot land last)."""
        tab = self._tab(client_id)
        if tab.decoder is None:
            raise QueryError("this run has no imitation field: run `splatseg imitate --run RUN` for the SAM-decoder mode")
        cam = tab.client.camera
        tab.decoder.click(origin, direction, focal_from_fov(cam.fov, cam.image_height), positive)
        tab.decoder_overlay.request()

    def decoder_lift(self, client_id: int) -> Selection:
        """Lifts one tab's decoder prompts to 3D: the tab's selection becomes the aggregated one."""
        tab = self._tab(client_id)
        if tab.decoder is None:
            raise QueryError("this run has no imitation field: run `splatseg imitate --run RUN` for the SAM-decoder mode")
        note = tab.client.add_notification("SAM decoder", "Decoding the training views and lifting the masks...", loading=True, with_close_button=False)
        try:
            sel, agg = tab.decoder.lift(threshold=tab.session.threshold, refine=bool(tab.gui["decoder_refine"].value))
        finally:
            note.remove()
        views = sum(map(len, agg.rounds))
        result = tab.session.set_selection(sel, f"the SAM decoder ({views} views{', refined' if tab.gui['decoder_refine'].value else ''})")
        tab.gui["decoder_on"].value = False  # show the 3D selection
        self._decoder_toggled(tab)
        self._show(tab)
        return result

    def stop(self) -> None:
        self.server.stop()
        torch.set_num_threads(self._torch_threads)

    # ------------------------------------------------------------------ set-up

    def _set_initial_camera(self, means: np.ndarray) -> None:
        """New tabs start at the first training view, with the scene's up direction."""
        try:
            cameras = load_scene(self.field.scene_root).cameras
        except Exception as e:  # a moved scene still leaves the splats viewable
            self.warnings.append(f"scene cameras unavailable ({e}); starting from viser's default view")
            return
        train_views = self.field.info.get("train_views") or cameras.names
        index = cameras.names.index(train_views[0]) if train_views[0] in cameras.names else 0
        sample = means[:: max(1, len(means) // 20000)]
        up = scene_up(cameras)
        pose = pose_from_camera(cameras, index, look_distance(cameras, index, sample), world_up=up)
        self.server.scene.set_up_direction(up)
        cam = self.server.initial_camera
        cam.fov = pose.fov_y
        cam.position = pose.position
        cam.look_at = pose.look_at
        cam.up = pose.up
        self.initial_view = cameras.names[index]

    def _load_decoder(self, splats):
        """(DecoderRun, LiftViews) when the run has imitation.npz, else (None, None); a broken
        imitation file only costs the decoder mode (a warning), not the viewer."""
        from splatseg.imitation.field import IMITATION_FILE

        if not (Path(self.cfg.run) / IMITATION_FILE).is_file():
            return None, None
        try:
            from splatseg.imitation.aggregate import LiftViews
            from splatseg.imitation.field import load_imitation
            from splatseg.imitation.views import DecoderRun

            imitation = load_imitation(self.cfg.run, len(splats))
            run = DecoderRun(Path(self.cfg.run), self.field.info, splats, splats.torch_params(),
                             load_scene(self.field.scene_root).cameras, imitation, torch.device("cpu"))
        except Exception as e:
            self.warnings.append(f"SAM-decoder mode unavailable: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            return None, None
        if imitation.random_teacher:
            self.warnings.append(f"the imitation field was trained from a RANDOMLY initialised SAM ({imitation.teacher}): "
                                 "decoder masks are meaningless for real use")
        return run, LiftViews(run)

    def _warm_up(self) -> None:
        """One picking render before the first tab connects, so the first click is not the one
        paying for torch's lazy initialisation."""
        cam = self.server.initial_camera
        direction = np.asarray(cam.look_at, np.float64) - np.asarray(cam.position, np.float64)
        if np.linalg.norm(direction) > 0:
            ray_render(self.picking, cam.position, direction, focal_from_fov(cam.fov, 720))

    def _on_connect(self, client: viser.ClientHandle) -> None:
        a = self.arrays
        splats = client.scene.add_gaussian_splats(SPLAT_NODE, a.centers, a.covariances, a.rgbs, a.opacities)
        tab = TabState(client=client, session=SelectionSession(self.field, self.picking), splats=splats)
        tab.overlay = _LatestOnly(lambda: self._render_overlay(tab))
        if self.decoder_run is not None:
            tab.decoder = DecoderTab(self.decoder_run, self.picking, self.lift_views, self.cfg.overlay_max_side)
            tab.decoder_overlay = _LatestOnly(lambda: self._render_decoder(tab))
        self._build_gui(tab)
        with self._tabs_lock:
            self._tabs[client.client_id] = tab
        for w in self.warnings:
            client.add_notification("Viewer warning", w, color="yellow", auto_close_seconds=15)

    def _on_disconnect(self, client: viser.ClientHandle) -> None:
        with self._tabs_lock:
            tab = self._tabs.pop(client.client_id, None)
        if tab is not None:
            tab.closed = True
            tab.session.clear()

    def _build_gui(self, tab: TabState) -> None:
        gui, g = tab.client.gui, tab.gui
        n = self.field.num_gaussians
        gui.add_markdown(f"**splatseg** — {n:,} Gaussians. Click an object to select it; "
                         f"**Shift**+click (or *Negative clicks*) marks what to leave out.")
        g["status"] = gui.add_markdown(tab.session.describe())
        g["granularity"] = gui.add_dropdown("Granularity", ("whole", "part"), initial_value="whole",
                                            hint="whole: the whole object under the click; part: the part of it")
        g["threshold"] = gui.add_slider("Threshold", min=0.05, max=0.95, step=0.05, initial_value=DEFAULT_THRESHOLD,
                                        hint="lifted score a Gaussian needs to be selected")
        g["negative"] = gui.add_checkbox("Negative clicks", False, hint="clicks remove instead of add (same as Shift+click)")
        g["clear"] = gui.add_button("Clear selection", icon=viser.Icon.TRASH)
        with gui.add_folder("Text prompt"):
            g["text"] = gui.add_text("Phrase", "", hint="e.g. 'a blue mug'")
            g["text_go"] = gui.add_button("Select by text", icon=viser.Icon.SEARCH)
            if self._text.backend is None:
                gui.add_markdown("_This run has no CLIPSeg or CLIP weights: text prompts are unavailable "
                                 "(train with `--clipseg PATH` or `--clip-pretrained`)._")
            else:
                gui.add_markdown(f"_Text is answered by {self._text.describe()}._")
        with gui.add_folder("Server render"):
            g["overlay"] = gui.add_dropdown("Overlay", OVERLAY_MODES, initial_value="off",
                                            hint="render the selection mask or the feature map (PCA colours) on the server")
        with gui.add_folder("SAM decoder"):
            if tab.decoder is None:
                gui.add_markdown("_No imitation field in this run: `splatseg imitate --run RUN` enables SAM's "
                                 "decoder here (masks live as you click, lifted to 3D)._")
            else:
                g["decoder_on"] = gui.add_checkbox("Decoder clicks", False, hint="clicks prompt SAM's decoder on the rendered "
                                                   "embedding; the mask is shown live for this camera (Shift+click: negative)")
                g["decoder_mask"] = gui.add_dropdown("Mask", MASK_CHOICES, initial_value="best",
                                                     hint="SAM's three masks: best score, or one by index")
                g["decoder_refine"] = gui.add_checkbox("Refine edges", False, hint="ray-pair RGB refinement after lifting")
                g["decoder_lift"] = gui.add_button("Lift to 3D", icon=viser.Icon.CUBE)
                g["decoder_clear"] = gui.add_button("Clear decoder points", icon=viser.Icon.TRASH)
                g["decoder_status"] = gui.add_markdown(tab.decoder.describe())
        with gui.add_folder("Export"):
            g["name"] = gui.add_text("File name", f"selection-tab{tab.client.client_id}")
            g["format"] = gui.add_dropdown("Format", tuple(OUTPUT_SUFFIXES), initial_value=".ply",
                                           hint=".ply copies the rows as they are; the others are compressed")
            g["export"] = gui.add_button("Export selection", icon=viser.Icon.DOWNLOAD)
            g["export_rest"] = gui.add_button("Export everything else", icon=viser.Icon.DOWNLOAD)
            g["export_mesh"] = gui.add_button("Export mesh", icon=viser.Icon.CUBE,
                                              hint="the selection as a vertex-coloured triangle mesh (.glb)")
            g["export_status"] = gui.add_markdown(f"Files go to `{self.exports_dir}` and to your browser.")

        def guarded(fn):
            def cb(_event) -> None:
                try:
                    fn()
                except Exception as e:  # shown in the page, not only in the terminal
                    self._report(tab, e)
            return cb

        g["granularity"].on_update(guarded(lambda: (tab.session.set_granularity(g["granularity"].value), self._show(tab))))
        g["threshold"].on_update(guarded(lambda: (tab.session.set_threshold(float(g["threshold"].value)), self._show(tab))))
        g["clear"].on_click(guarded(lambda: (tab.session.clear(), self._show(tab))))
        g["text_go"].on_click(guarded(lambda: self._text_from_gui(tab)))
        g["overlay"].on_update(guarded(lambda: self._overlay_changed(tab)))
        g["export"].on_click(guarded(lambda: self._export_from_gui(tab, invert=False)))
        g["export_rest"].on_click(guarded(lambda: self._export_from_gui(tab, invert=True)))
        g["export_mesh"].on_click(guarded(lambda: self._export_mesh_from_gui(tab)))
        if tab.decoder is not None:
            g["decoder_on"].on_update(guarded(lambda: self._decoder_toggled(tab)))
            g["decoder_mask"].on_update(guarded(lambda: (tab.decoder.set_mask_choice(g["decoder_mask"].value), self._decoder_refresh(tab))))
            g["decoder_lift"].on_click(guarded(lambda: self.decoder_lift(tab.client.client_id)))
            g["decoder_clear"].on_click(guarded(lambda: (tab.decoder.clear(), self._decoder_refresh(tab))))
        tab.client.camera.on_update(lambda _cam: self._camera_moved(tab))

    # ------------------------------------------------------------------ events

    def _on_click(self, event: viser.SceneClickEvent) -> None:
        with self._tabs_lock:
            tab = self._tabs.get(event.client_id)
        if tab is None:
            return
        positive = event.modifier != NEGATIVE_MODIFIER and not tab.gui["negative"].value
        try:
            if self._decoder_on(tab):
                self.decoder_click(event.client_id, event.ray_origin, event.ray_direction, event.modifier != NEGATIVE_MODIFIER)
                return
            self.click(event.client_id, event.ray_origin, event.ray_direction, positive)
        except Exception as e:
            self._report(tab, e)

    def _text_from_gui(self, tab: TabState) -> None:
        note = None
        if (self._text.backend == "clip" and self._clip is None) or (self._text.backend == "clipseg" and self._text._index is None):
            what = "CLIPSeg" if self._text.backend == "clipseg" else "the CLIP text encoder"
            note = tab.client.add_notification("Text prompt", f"Loading {what}...", loading=True, with_close_button=False)
        try:
            self.select_text(tab.client.client_id, tab.gui["text"].value)
        finally:
            if note is not None:
                note.remove()

    def _export_from_gui(self, tab: TabState, invert: bool) -> None:
        what = "everything else" if invert else "the selection"
        count = tab.session.count if not invert else self.field.num_gaussians - tab.session.count
        note = tab.client.add_notification("Export", f"Writing {what} ({count:,} Gaussians)...", loading=True, with_close_button=False)
        try:
            out, rows = self.export(tab.client.client_id, invert)
            tab.client.send_file_download(out.name, out.read_bytes(), save_immediately=True)
        finally:
            note.remove()
        tab.gui["export_status"].content = f"Exported **{rows:,}** Gaussians to `{out}`."
        tab.client.add_notification("Exported", f"{rows:,} Gaussians -> {out}", color="green", auto_close_seconds=6)

    def _export_mesh_from_gui(self, tab: TabState) -> None:
        note = tab.client.add_notification("Export mesh", f"Meshing the selection ({tab.session.count:,} Gaussians)...",
                                           loading=True, with_close_button=False)
        try:
            out, summary = self.export_mesh(tab.client.client_id)
            tab.client.send_file_download(out.name, out.read_bytes(), save_immediately=True)
        finally:
            note.remove()
        text = f"{summary['vertices']:,} vertices, {summary['faces']:,} faces (voxel {summary['voxel_size']:.3g})"
        tab.gui["export_status"].content = f"Exported a mesh of **{text}** to `{out}`."
        tab.client.add_notification("Exported mesh", f"{text} -> {out}", color="green", auto_close_seconds=6)

    def _overlay_changed(self, tab: TabState) -> None:
        mode = tab.gui["overlay"].value
        tab.splats.visible = mode == "off"
        if mode == "off":
            tab.client.scene.set_background_image(None)
        else:
            tab.overlay.request()

    def _camera_moved(self, tab: TabState) -> None:
        if tab.closed:
            return
        if self._decoder_on(tab):
            tab.decoder_overlay.request()
        elif "overlay" in tab.gui and tab.gui["overlay"].value != "off":
            tab.overlay.request()

    def _decoder_on(self, tab: TabState) -> bool:
        return tab.decoder is not None and "decoder_on" in tab.gui and bool(tab.gui["decoder_on"].value)

    def _decoder_toggled(self, tab: TabState) -> None:
        """Decoder mode on: the splats give way to the server-rendered decoder frame; off: back to
        the overlay setting."""
        if self._decoder_on(tab):
            tab.splats.visible = False
            tab.decoder_overlay.request()
        else:
            self._overlay_changed(tab)

    def _decoder_refresh(self, tab: TabState) -> None:
        if self._decoder_on(tab):
            tab.decoder_overlay.request()
        if "decoder_status" in tab.gui:
            tab.gui["decoder_status"].content = tab.decoder.describe()

    def _render_decoder(self, tab: TabState) -> None:
        if tab.closed or tab.decoder is None:
            return
        cam = tab.client.camera
        try:
            frame = tab.decoder.frame(cam.wxyz, cam.position, cam.fov, cam.image_width, cam.image_height)
        except Exception as e:
            self._report(tab, e)
            return
        tab.gui["decoder_status"].content = tab.decoder.describe()
        if not tab.closed and self._decoder_on(tab):
            tab.client.scene.set_background_image(frame.image, format="jpeg", jpeg_quality=90)
            tab.decoder_frames += 1

    # ------------------------------------------------------------------ output

    def _show(self, tab: TabState) -> None:
        """Recolours the tab's splats, updates its status line and, if on, its overlay."""
        if tab.closed:
            return
        with tab.session.lock:  # held while recolouring, so a stale selection never lands last
            mask = tab.session.mask
            status = tab.session.describe()
            tab.splats.rgbs = self.highlighter.rgbs(mask)
        if tab.last_click is not None:
            c = tab.last_click
            status += f"  \n<small>last click: ray {1e3 * c.ray_seconds:.0f} ms, query {1e3 * c.query_seconds:.0f} ms</small>"
        tab.gui["status"].content = status
        if tab.gui["overlay"].value == "selection" and not self._decoder_on(tab):
            tab.overlay.request()

    def _render_overlay(self, tab: TabState) -> None:
        mode = tab.gui["overlay"].value
        if tab.closed or mode == "off" or self._decoder_on(tab):
            return
        cam = tab.client.camera
        try:
            img = self.overlay.render(mode, cam.wxyz, cam.position, cam.fov, cam.image_width, cam.image_height, tab.session.mask)
        except Exception as e:
            self._report(tab, e)
            return
        if not tab.closed and tab.gui["overlay"].value == mode:
            tab.client.scene.set_background_image(img, format="jpeg", jpeg_quality=90)
            tab.overlay_frames += 1

    def _report(self, tab: TabState, error: Exception) -> None:
        expected = isinstance(error, (ValueError, OSError, ImportError, SemanticsError))
        msg = str(error).splitlines()[0] if str(error) else type(error).__name__
        if not expected:
            traceback.print_exception(error)
            msg = f"{type(error).__name__}: {msg}"
        if tab.closed:
            return
        tab.client.add_notification("Cannot do that", msg, color="red", auto_close_seconds=10)
        tab.gui["status"].content = f"{tab.session.describe()}  \n**Error:** {msg}"

    # ------------------------------------------------------------------ helpers

    def _tab(self, client_id: int) -> TabState:
        with self._tabs_lock:
            tab = self._tabs.get(client_id)
        if tab is None:
            raise KeyError(f"no open browser tab with client id {client_id}")
        return tab

    def _text_embeddings(self, phrases: list[str]) -> np.ndarray:
        """L2-normalised CLIP text embeddings [T, E] from the encoder the run was trained with
        (run.json `clip_model_name`, `clip_pretrained`), loaded once and shared by all tabs."""
        with self._clip_lock:
            if self._clip is None:
                from splatseg.semantics.clip import load_text_encoder

                model, pretrained = self.field.info.get("clip_model_name"), self.field.info.get("clip_pretrained")
                if not model or not pretrained:
                    raise QueryError("this run does not name the CLIP model it was trained with: text prompts are refused")
                self._clip = load_text_encoder(model, pretrained)
            emb = np.asarray(self._clip.encode_text(phrases), np.float32)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-8)


def _safe_stem(name: str) -> str:
    """A file stem from user text: letters, digits, '.', '_' and '-' only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    if not stem:
        raise QueryError("the export file name is empty")
    return stem


def run_viewer(cfg: ViewerConfig, block: bool = True) -> ViewerApp:
    """Starts the viewer; with `block`, serves until Ctrl+C, then stops it."""
    app = ViewerApp(cfg)
    print(f"splatseg viewer: {app.url}  ({app.field.num_gaussians:,} Gaussians from {app.field.run_dir})", flush=True)
    for w in app.warnings:
        print(f"warning: {w}", flush=True)
    if block:
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            app.stop()
    return app
