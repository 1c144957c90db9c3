# Hearth code interpreter: IPython startup, run in every python kernel before any cell.
# It adds the display formats the E2B SDKs read beyond IPython's own:
#   e2b/data          a pandas DataFrame as {column: [values...]} (Result.data)
#   application/json  dicts and lists as JSON (Result.json)
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
