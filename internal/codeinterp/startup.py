# Hearth code interpreter: IPython startup, run in every python kernel before any cell.
# It adds the display formats the E2B SDKs read beyond IPython's own:
#   e2b/data          a pandas DataFrame as {column: [values...]} (Result.data)
#   application/json  dicts and lists as JSON (Result.json)
#   e2b/chart         a matplotlib figure as E2B's chart JSON (Result.chart): line, scatter,
#                     bar, pie, box_and_whisker, superchart (several axes); anything else is
#                     type unknown
# and makes Pillow's Image.show() display the image instead of starting a viewer.


def _hearth_setup():
    import json
    import math

    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    ip = get_ipython()
    if ip is None:
        return

    def plain(v):
        """A value JSON can carry: numpy scalars unwrapped, dates as ISO strings, NaN as null."""
        if hasattr(v, "isoformat"):
            try:
                return v.isoformat()
            except Exception:
                return str(v)
        if hasattr(v, "item") and not isinstance(v, (list, dict, str, bytes)):
            try:
                v = v.item()
            except Exception:
                pass
        if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
            return None
        if isinstance(v, (str, int, float, bool)) or v is None:
            return v
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if hasattr(v, "tolist"):
            return plain(v.tolist())
        return str(v)

    class DataFormatter(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict,)

    data = DataFormatter(parent=ip.display_formatter)
    ip.display_formatter.formatters["e2b/data"] = data

    def dataframe(df):
        return {str(k): [plain(x) for x in col] for k, col in df.to_dict(orient="list").items()}

    data.for_type_by_name("pandas.core.frame", "DataFrame", dataframe)

    js = ip.display_formatter.formatters["application/json"]

    def as_json(obj):
        try:
            return json.loads(json.dumps(plain(obj), allow_nan=False))
        except Exception:
            return None

    js.for_type(dict, as_json)
    js.for_type(list, as_json)

    class ChartFormatter(BaseFormatter):
        # Figures are matched here, not registered: enabling the inline backend (on the
        # first import of pyplot) removes Figure from every formatter's registrations.
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict,)

        def __call__(self, obj):
            if any(c.__module__ == "matplotlib.figure" and c.__name__ == "Figure" for c in type(obj).__mro__):
                return figure_chart(obj)
            return None

    chart = ChartFormatter(parent=ip.display_formatter)
    ip.display_formatter.formatters["e2b/chart"] = chart

    def figure_chart(fig):
        try:
            axes = fig.get_axes()
            if not axes:
                return {}
            charts = [axes_chart(ax) for ax in axes]
            if len(charts) == 1:
                return charts[0]
            sup = getattr(fig, "_suptitle", None)
            return {"type": "superchart", "title": (sup.get_text() or None) if sup else None, "elements": charts}
        except Exception:
            return {}


    def axes_chart(ax):
        import re

        from matplotlib.collections import PathCollection
        from matplotlib.patches import PathPatch, Rectangle, Wedge

        title = ax.get_title() or None
        lines, colls = list(ax.lines), list(ax.collections)
        patches = [p for p in ax.patches]
        if lines and not colls and not patches:
            kind = "line"
        elif colls and all(isinstance(c, PathCollection) for c in colls) and not patches:
            kind = "scatter"
        elif patches and all(isinstance(p, Wedge) for p in patches) and not colls:
            kind = "pie"
        elif patches and all(type(p) is Rectangle for p in patches) and not colls:
            kind = "bar"
        elif patches and all(type(p) is PathPatch for p in patches) and not colls:
            # boxplot(patch_artist=True): a PathPatch per box, Line2Ds for whiskers, caps,
            # medians and fliers. (Without patch_artist the boxes are lines too, and E2B
            # calls that a line chart.)
            kind = "box_and_whisker"
        else:
            return {"type": "unknown", "title": title, "elements": []}
        if kind == "pie":
            return {"type": "pie", "title": title, "elements": [
                {"label": w.get_label(), "angle": round(abs(w.theta2 - w.theta1)), "radius": float(w.r)} for w in patches]}

        def unit(label):
            m = re.search(r"\((.*?)\)|\[(.*?)\]", label or "")
            return (m.group(1) or m.group(2)) if m else None

        def is_date(axis):
            import matplotlib.dates as mdates

            conv = getattr(axis, "converter", None) or (axis.get_converter() if hasattr(axis, "get_converter") else None)
            return isinstance(conv, (mdates.DateConverter, getattr(mdates, "_SwitchableDateConverter", mdates.DateConverter), mdates.ConciseDateConverter))

        def scale(axis, name):
            if is_date(axis):
                return "datetime"
            s = name()
            if s != "linear":
                return s
            conv = getattr(axis, "converter", None)
            if conv is not None and type(conv).__name__ == "StrCategoryConverter":
                return "categorical"
            return "linear"

        def coord(v, date):
            if date:
                import matplotlib.dates as mdates

                return mdates.num2date(mdates.date2num(v)).isoformat()
            return plain(v)

        xd, yd = is_date(ax.xaxis), is_date(ax.yaxis)
        xlabel, ylabel = ax.get_xlabel() or None, ax.get_ylabel() or None
        out = {
            "type": kind, "title": title,
            "x_label": xlabel, "y_label": ylabel, "x_unit": unit(xlabel), "y_unit": unit(ylabel),
        }
        if kind == "box_and_whisker":
            return box_chart(ax, out)
        if kind == "bar":
            # barh: the categories are on y and a bar's value is its width. matplotlib says
            # which (BarContainer.orientation), where E2B guesses from equal heights.
            horizontal = any(getattr(c, "orientation", None) == "horizontal" for c in ax.containers)
            labels = [t.get_text() for t in (ax.get_yticklabels() if horizontal else ax.get_xticklabels())]
            elements = []
            for i, cont in enumerate(ax.containers):
                group = cont.get_label()
                if not group or group.startswith("_container"):
                    group = "Group %d" % i
                for j, rect in enumerate(cont):
                    if horizontal:
                        pos, value = rect.get_y() + rect.get_height() / 2, rect.get_width()
                    else:
                        pos, value = rect.get_x() + rect.get_width() / 2, rect.get_height()
                    elements.append({"label": labels[j] if j < len(labels) and len(labels) == len(cont) else str(plain(pos)),
                                     "group": group, "value": plain(value)})
            if horizontal:  # as E2B's JSON: x_label is the categories' axis
                out["x_label"], out["y_label"] = out["y_label"], out["x_label"]
                out["x_unit"], out["y_unit"] = out["y_unit"], out["x_unit"]
            out["elements"] = elements
            return out
        out.update({
            "x_ticks": [coord(v, xd) if not xd else mdates_iso(v) for v in ax.get_xticks()],
            "y_ticks": [coord(v, yd) if not yd else mdates_iso(v) for v in ax.get_yticks()],
            "x_tick_labels": [t.get_text() for t in ax.get_xticklabels()],
            "y_tick_labels": [t.get_text() for t in ax.get_yticklabels()],
            "x_scale": scale(ax.xaxis, ax.get_xscale), "y_scale": scale(ax.yaxis, ax.get_yscale),
        })
        if kind == "line":
            out["elements"] = [{"label": l.get_label(), "points": [[coord(x, xd), coord(y, yd)] for x, y in zip(l.get_xdata(), l.get_ydata())]} for l in lines]
        else:
            out["elements"] = [{"label": c.get_label(), "points": [[mdates_iso(x) if xd else plain(x), mdates_iso(y) if yd else plain(y)] for x, y in c.get_offsets()]} for c in colls]
        return out

    def round12(v):
        # Box statistics are computed by numpy; 12 significant digits drop float noise
        # (84.75 rather than 84.74999999999999) and keep every value a float, as E2B's.
        return float("%.12g" % float(v))

    def box_chart(ax, out):
        """Each box's quartiles from its patch's extent, its median, whiskers and outliers
        from the lines drawn within its span. x_label is the categories' axis, as in E2B's
        JSON, also for horizontal boxes (vert=False)."""
        extents = []
        for p in ax.patches:
            v = p.get_path().vertices
            extents.append(((round12(v[:, 0].min()), round12(v[:, 0].max())), (round12(v[:, 1].min()), round12(v[:, 1].max()))))
        widths = [x[1] - x[0] for x, _ in extents]
        # Boxes side by side along x all have one width in x; horizontal ones differ in it.
        vertical = all(abs(w - widths[0]) < 1e-9 for w in widths)
        boxes = []
        for x, y in extents:
            span, (q1, q3) = (x, y) if vertical else (y, x)
            boxes.append({"span": span, "q1": q1, "q3": q3, "min": q1, "max": q3, "outliers": [], "mids": []})
        for line in ax.lines:
            ps, vs = [round12(a) for a in line.get_xdata()], [round12(a) for a in line.get_ydata()]
            if not vertical:
                ps, vs = vs, ps
            if not ps:
                continue
            box = next((b for b in boxes if all(b["span"][0] - 1e-9 <= p <= b["span"][1] + 1e-9 for p in ps)), None)
            if box is None:
                continue
            if line.get_linestyle() in ("None", "", " "):  # fliers: markers only
                box["outliers"].extend(vs)
            elif len(vs) == 2 and ps[0] == ps[1]:  # a whisker, from a quartile outwards
                lo, hi = min(vs), max(vs)
                if hi <= box["q1"]:
                    box["min"] = lo
                elif lo >= box["q3"]:
                    box["max"] = hi
            elif len(vs) == 2 and vs[0] == vs[1] and box["q1"] <= vs[0] <= box["q3"]:
                # the median, or a cap at a quartile; the median spans the box, caps half of it
                box["mids"].append((abs(ps[1] - ps[0]), vs[0]))
        ticks = ax.get_xticks() if vertical else ax.get_yticks()
        labels = [t.get_text() for t in (ax.get_xticklabels() if vertical else ax.get_yticklabels())]
        elements = []
        for i, b in enumerate(boxes):
            label = next((labels[j] for j, t in enumerate(ticks) if j < len(labels) and b["span"][0] <= t <= b["span"][1]), str(i + 1))
            median = max(b["mids"])[1] if b["mids"] else None
            elements.append({"label": label, "min": b["min"], "first_quartile": b["q1"], "median": median,
                             "third_quartile": b["q3"], "max": b["max"], "outliers": b["outliers"]})
        if not vertical:
            out["x_label"], out["y_label"] = out["y_label"], out["x_label"]
            out["x_unit"], out["y_unit"] = out["y_unit"], out["x_unit"]
        out["elements"] = elements
        return out

    def mdates_iso(num):
        import matplotlib.dates as mdates

        return mdates.num2date(num).isoformat()

    def pil_show(image, *args, **kwargs):
        from IPython.display import display

        display(image)

    try:  # Pillow is optional; importing it costs a few milliseconds
        from PIL import Image

        Image.Image.show = pil_show
    except Exception:
        pass


try:
    _hearth_setup()
finally:
    del _hearth_setup
