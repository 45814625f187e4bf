"""Shared plumbing for saekit's widgets: assets, strict keyword arguments, stable reprs, static HTML.

A widget is an `anywidget.AnyWidget` subclass of `SaeWidget` whose front end is one plain ES module and
one CSS file in the repo-root `widgets/` folder (shipped in the wheel as `saekit/_widgets`):

    class MyPanel(SaeWidget):
        _asset_js = "my_panel.js"     # exports default { render({ model, el }) { ...; return cleanup } }
        _asset_css = "my_panel.css"
        value = traitlets.Float(0.0).tag(sync=True)     # public state: users read and observe it
        _data = traitlets.Bytes(b"").tag(sync=True)     # plumbing: leading underscore

        def __init__(self, data, **kwargs):
            super().__init__(**kwargs)                  # unknown keyword arguments raise TypeError here
            self._data = pack(data)

        def _repr_args(self):
            return f"n={len(self._data)}"              # short and deterministic (notebook outputs stay stable)

`to_html(path)` writes one standalone file: the ES module, the CSS and the synced state inlined, run by
`widgets/static.js` against a small in-page model (get/set/on/off/save_changes/send), so the same
`render` draws the same view with no kernel, no server and no network (a Content-Security-Policy of
`default-src 'none'` enforces that). Several widgets can share one page, with trait links between them
(`export_html(path, [a, b], links=[(a, "selected", b, "feature")])`).

Saved notebooks: a widget's display bundle carries a static snapshot next to the live view (`text/html`:
its `to_html` page inside a sandboxed `<iframe srcdoc>`), so a notebook saved with outputs shows the widget
where no kernel runs (nbviewer, documentation pages, JupyterLab before the kernel starts); a running front end
shows the live view instead (the widget mime type ranks first). `snapshot_bundle` adds it to any bundle.

Safety: the front ends put data into the page with `textContent` only; `embed_json` escapes `<`, `>`
and `&` so no string can close the `<script>` that carries the state.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import anywidget
import traitlets

from ..errors import WidgetError

_BASE_KEYS = {"layout", "tabbable", "tooltip", "comm", "keys", "log"}


def asset_dir() -> Path:
    """Folder of the widgets' ES modules and CSS: `saekit/_widgets` in a wheel, else the repo's `widgets/`."""
    import saekit

    pkg = Path(saekit.__file__).parent
    installed = pkg / "_widgets"
    return installed if installed.is_dir() else pkg.parent / "widgets"


def asset(name: str) -> Path:
    """Path of one front-end file, e.g. `asset("feature_dashboard.js")`; a clear error when missing."""
    p = asset_dir() / name
    if not p.is_file():
        raise WidgetError(
            f"widget asset {name!r} not found in {asset_dir()}: reinstall saekit (the wheel ships it as saekit/_widgets)"
        )
    return p


def embed_json(obj: Any) -> str:
    """JSON safe to place inside a <script> element: '<', '>' and '&' become \\u escapes."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def error_message(e: BaseException) -> str:
    """How a widget shows an error in its view (and in its `error` trait): 'TypeName: message'."""
    return f"{type(e).__name__}: {e}"


def short_text(text: str, n: int = 32) -> str:
    """`repr` of `text` cut to `n` characters (with an ellipsis), for widgets' short reprs."""
    return repr(text if len(text) <= n else text[: n - 1] + "…")


def _json_default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(o)).decode("ascii")}
    if hasattr(o, "tolist"):
        return o.tolist()
    raise WidgetError(f"cannot put a {type(o).__name__} into a widget's static state")


class SaeWidget(anywidget.AnyWidget):
    """Base of saekit's widgets: strict kwargs, deterministic repr, `to_html`."""

    _asset_js: ClassVar[str] = ""
    """File name of the widget's ES module in `widgets/`."""
    _asset_css: ClassVar[str] = ""
    """File name of the widget's CSS in `widgets/`."""
    _static = traitlets.Bool(False).tag(sync=True)
    """True only in exported HTML: the front end hides what needs a kernel."""
    _snapshot_height: ClassVar[int] = 480
    """Height in pixels of the static snapshot's frame in saved notebooks (the reader can resize it)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if cls.__dict__.get("_asset_js"):
            cls._esm = asset(cls._asset_js)
            cls._css = asset(cls._asset_css)
        super().__init_subclass__(**kwargs)  # anywidget turns the paths into file contents

    def __init__(self, **kwargs: Any) -> None:
        allowed = self.public_traits()
        unknown = sorted(set(kwargs) - allowed - _BASE_KEYS)
        if unknown:
            raise WidgetError(
                f"{type(self).__name__} got unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"it accepts: {', '.join(sorted(allowed | {'layout'}))}"
            )
        super().__init__(**kwargs)

    @classmethod
    def public_traits(cls) -> set[str]:
        """Names of the synced traits users may set and observe (no leading underscore)."""
        names: set[str] = set()
        for klass in cls.__mro__:
            if klass is SaeWidget:
                break
            if isinstance(klass, type) and issubclass(klass, traitlets.HasTraits):
                names |= {n for n, t in klass.class_own_traits().items() if not n.startswith("_") and t.metadata.get("sync")}
        return names

    # -- repr -------------------------------------------------------------------------------------

    def _repr_args(self) -> str:
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in sorted(self.public_traits()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._repr_args()})"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The live view's bundle plus the static snapshot (`text/html`) for readers without a kernel."""
        return snapshot_bundle(super()._repr_mimebundle_(**kwargs), safe_snapshot(self.snapshot_html))

    def snapshot_html(self) -> str:
        """This widget's static snapshot for saved notebooks: its `to_html` page in a sandboxed iframe."""
        return snapshot_frame(lambda path: self.to_html(path), self._snapshot_height)

    # -- static export ----------------------------------------------------------------------------

    def static_state(self) -> dict[str, Any]:
        """The synced state a static page needs (ipywidgets' own plumbing left out)."""
        state = self.get_state()
        skip = {"_esm", "_css", "_anywidget_id", "layout", "tabbable", "tooltip", "_dom_classes"}
        out = {k: v for k, v in state.items() if k not in skip and not k.startswith(("_model_", "_view_"))}
        out["_static"] = True
        return out

    def to_html(self, path: str | Path, *, title: str | None = None) -> Path:
        """Write a standalone HTML file showing this widget's current view (no kernel, no network)."""
        return export_html(path, [self], title=title or type(self).__name__)


def export_html(
    path: str | Path,
    widgets: Sequence[SaeWidget],
    *,
    links: Iterable[tuple[SaeWidget, str, SaeWidget, str]] = (),
    title: str = "saekit",
    states: Sequence[dict[str, Any]] | None = None,
) -> Path:
    """Write one HTML page with `widgets` stacked vertically; `links` copy a trait of one to another on change.

    `states` overrides each widget's `static_state()` (e.g. to add data for views reachable offline).
    """
    widgets = list(widgets)
    index = {id(w): i for i, w in enumerate(widgets)}
    link_list = []
    for src, src_name, dst, dst_name in links:
        if id(src) not in index or id(dst) not in index:
            raise WidgetError("export_html links must connect widgets that are on the page")
        link_list.append([index[id(src)], src_name, index[id(dst)], dst_name])
    payload = {
        "widgets": [
            {
                "esm": asset(w._asset_js).read_text(encoding="utf-8"),
                "state": (states[i] if states is not None else w.static_state()),
            }
            for i, w in enumerate(widgets)
        ],
        "links": link_list,
    }
    css = "\n".join(dict.fromkeys(asset(w._asset_css).read_text(encoding="utf-8") for w in widgets))
    css = css.replace("</", "<\\/")  # CSS is ours, but never let it close the <style> element
    runtime = "\n" + asset("static.js").read_text(encoding="utf-8") + "\n"  # ours; holds no "</"
    csp = static_page_csp(runtime)
    page = (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{STATIC_PAGE_CSS}\n{css}\n</style>\n</head>\n<body>\n"
        + "".join(f"<div class=\"saekit-static\" id=\"saekit-widget-{i}\"></div>\n" for i in range(len(widgets)))
        + f"<script type=\"application/json\" id=\"saekit-state\">{embed_json(payload)}</script>\n"
        + f"<script type=\"module\">{runtime}</script>\n</body>\n</html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def snapshot_frame(write: Callable[[Path], Any], height: int) -> str:
    """`write(path)` makes a standalone page (a widget's `to_html`); returns it inside an `<iframe srcdoc>`.

    The frame is sandboxed (`allow-scripts` only: an opaque origin that cannot reach the notebook page, its
    cookies or the kernel) and the page keeps its own Content-Security-Policy, so it loads nothing.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot.html"
        write(path)
        page = path.read_text(encoding="utf-8")
    return (
        f'<iframe class="saekit-snapshot" title="saekit widget (static snapshot)" sandbox="allow-scripts" '
        f'style="width: 100%; height: {int(height)}px; border: 1px solid #ddd; resize: vertical; overflow: auto" '
        f'srcdoc="{html.escape(page, quote=True)}"></iframe>'
    )


def safe_snapshot(make: Callable[[], str]) -> str | None:
    """`make()`, or None when it fails: a widget whose static page cannot be built still shows its live view
    (the failure is logged as a warning, never raised into the display)."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - the snapshot is an extra; the live view must not depend on it
        import warnings

        warnings.warn(f"saekit: no static snapshot for this widget's saved output ({error_message(e)})", stacklevel=2)
        return None


def snapshot_bundle(bundle: Any, snapshot: str | None) -> Any:
    """Add `snapshot` as `text/html` to a display bundle (a dict, or a (data, metadata) pair); None adds nothing."""
    if bundle is None or snapshot is None:
        return bundle
    if isinstance(bundle, tuple):
        data, meta = bundle
        return {**data, "text/html": snapshot}, meta
    return {**bundle, "text/html": snapshot}


def static_page_csp(runtime: str) -> str:
    """The exported page's Content-Security-Policy: nothing from the network, and only our own runtime runs.

    The one inline script is allowed by its SHA-256 hash (no 'unsafe-inline'), so markup that ever slipped
    into the page could not run script; the widgets' modules load from `blob:` URLs that only the runtime
    creates. No `<base>` and no form submission either.
    """
    digest = base64.b64encode(hashlib.sha256(runtime.encode("utf-8")).digest()).decode()
    return (
        f"default-src 'none'; script-src 'sha256-{digest}' blob:; style-src 'unsafe-inline'; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )


STATIC_PAGE_CSS = """body { margin: 16px; font-family: system-ui, sans-serif; background: #fff; color: #222; }
.saekit-static { margin-bottom: 24px; }"""


__all__ = [
    "SaeWidget", "asset", "asset_dir", "embed_json", "error_message", "export_html", "short_text", "safe_snapshot",
    "snapshot_bundle", "snapshot_frame",
]
