"""The CLI's pure parts: NAME:VERSION references, inference data parsing, and table rendering."""

from __future__ import annotations

import io
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from ferryman.cli.arguments import (
    ModelRef,
    parse_csv,
    parse_input_option,
    parse_json_data,
    parse_ref,
    read_data_file,
)
from ferryman.cli.main import app
from ferryman.cli.output import (
    alias_history_table,
    format_time,
    format_value,
    human_size,
    jsonable,
    models_table,
    output_rows,
    outputs_table,
    short_sha,
    signature_table,
    versions_table,
)


def render(table: object) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(table)
    return buffer.getvalue()


# -- NAME[:VERSION] --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("churn", ModelRef("churn")),
        ("churn:3", ModelRef("churn", 3)),
        ("my-model.v2_x:12", ModelRef("my-model.v2_x", 12)),
        ("9lives:1", ModelRef("9lives", 1)),
    ],
)
def test_parse_ref_accepts_names_and_versions(text: str, expected: ModelRef) -> None:
    assert parse_ref(text) == expected
    assert str(parse_ref(text)) == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("churn:", "invalid version ''"),
        ("churn:0", "invalid version '0'"),
        ("churn:-1", "invalid version '-1'"),
        ("churn:x", "positive version number"),
        ("churn:1:2", "invalid version '1:2'"),
        (":3", "invalid model name ''"),
        ("-churn:3", "invalid model name '-churn'"),
        ("a/b:1", "invalid model name 'a/b'"),
        ("x" * 129, "invalid model name"),
    ],
)
def test_parse_ref_rejects_bad_syntax(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_ref(text)
    assert fragment in str(info.value)


def test_parse_ref_version_rules() -> None:
    with pytest.raises(ValueError, match="expected NAME:VERSION"):
        parse_ref("churn", version="required")
    with pytest.raises(ValueError, match="without a version"):
        parse_ref("churn:2", version="forbidden")
    assert parse_ref("churn", version="forbidden") == ModelRef("churn")
    assert parse_ref("churn:production", allow_alias=True) == ModelRef("churn", "production")
    assert parse_ref("churn:4", allow_alias=True) == ModelRef("churn", 4)
    with pytest.raises(ValueError, match="version number or an alias"):
        parse_ref("churn:pro duction", allow_alias=True)


# -- JSON and CSV data -----------------------------------------------------------------------------


def test_parse_json_data_nested_lists() -> None:
    array = parse_json_data("[[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]")
    assert array.shape == (2, 4)
    assert array.dtype == np.float64
    assert parse_json_data("[1, 2, 3]").dtype == np.int64
    assert parse_json_data('["a", "b"]').tolist() == ["a", "b"]
    assert parse_json_data("[true, false]").dtype == np.bool_


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[1, 2], [3]]", "ragged"),
        ("[1, 2", "not valid JSON"),
        ('{"x": [1]}', "JSON object"),
        ('[1, "a", [2]]', "ragged"),
    ],
)
def test_parse_json_data_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_json_data(text)


def test_parse_input_option() -> None:
    name, array = parse_input_option("x=[[1, 2], [3, 4]]")
    assert name == "x"
    assert array.tolist() == [[1, 2], [3, 4]]
    name, array = parse_input_option(' text = ["a=b"]')
    assert (name, array.tolist()) == ("text", ["a=b"])
    with pytest.raises(ValueError, match="NAME=JSON"):
        parse_input_option("[1, 2]")
    with pytest.raises(ValueError, match="NAME=JSON"):
        parse_input_option("=[1]")


def test_parse_csv_with_and_without_header() -> None:
    with_header = parse_csv("sepal_length,sepal_width\n5.1,3.5\n4.9,3.0\n")
    assert with_header.dtype == np.float64
    assert with_header.tolist() == [[5.1, 3.5], [4.9, 3.0]]
    without = parse_csv("1,2,3\n4,5,6\n\n")
    assert without.dtype == np.int64
    assert without.tolist() == [[1, 2, 3], [4, 5, 6]]
    single_column = parse_csv("x\n1.5\n2.5\n")
    assert single_column.shape == (2, 1)
    assert parse_csv("1.0,2\n").dtype == np.float64
    assert parse_csv("1e3,2\n").dtype == np.float64


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no data rows"),
        ("a,b\n", "no data rows"),
        ("1,2\n3\n", "row 2 has 1 values, expected 2"),
        ("a,b\n1,2\nx,3\n", "row 2 is not numeric"),
    ],
)
def test_parse_csv_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_csv(text)


def test_read_data_file(tmp_path: Path) -> None:
    npy = tmp_path / "data.npy"
    np.save(npy, np.arange(6, dtype=np.float32).reshape(2, 3))
    loaded = read_data_file(npy)
    assert loaded.dtype == np.float32
    assert loaded.shape == (2, 3)
    csv_file = tmp_path / "data.CSV"
    csv_file.write_text("a,b\n1.5,2\n")
    assert read_data_file(csv_file).tolist() == [[1.5, 2.0]]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("1,2\nx,y\n")
    with pytest.raises(ValueError, match=r"bad\.csv: CSV data row 2"):
        read_data_file(bad_csv)
    other = tmp_path / "data.json"
    other.write_text("[1]")
    with pytest.raises(ValueError, match=r"expected a \.npy or \.csv"):
        read_data_file(other)
    with pytest.raises(ValueError, match="is not a file"):
        read_data_file(tmp_path / "missing.npy")
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"not a readable \.npy"):
        read_data_file(broken)


# -- rendering -------------------------------------------------------------------------------------


def test_output_rows_one_row_per_example() -> None:
    headers, rows = output_rows(
        {
            "label": np.array([b"setosa", b"virginica"], dtype=object),
            "proba": np.array([[0.9, 0.1], [0.25, 0.75]]),
        }
    )
    assert headers == ["#", "label", "proba[0]", "proba[1]"]
    assert rows == [["0", "setosa", "0.9", "0.1"], ["1", "virginica", "0.25", "0.75"]]


def test_output_rows_wide_deep_and_scalar_outputs() -> None:
    headers, rows = output_rows(
        {
            "wide": np.arange(20).reshape(2, 10),
            "deep": np.zeros((2, 2, 2), dtype=np.int32),
            "count": np.array(7),
        }
    )
    assert headers == ["#", "wide", "deep", "count"]
    assert rows[0] == ["0", "[0, 1, 2, 3, 4, 5, …]", "[[0, 0], [0, 0]]", "7"]
    assert rows[1][0] == "1"
    assert rows[1][3] == "7"


def test_output_rows_uneven_batches_leave_blank_cells() -> None:
    headers, rows = output_rows({"a": np.array([1, 2, 3]), "b": np.array([True])})
    assert headers == ["#", "a", "b"]
    assert rows == [["0", "1", "true"], ["1", "2", ""], ["2", "3", ""]]


def test_format_value() -> None:
    assert format_value(np.float32(0.1)) == "0.1"
    assert format_value(1 / 3) == "0.333333"
    assert format_value(b"\xff") == "b'\\xff'"
    assert format_value(True) == "true"
    assert format_value(None) == "-"
    assert format_value(np.array([1.5, 2.0])) == "[1.5, 2]"


def test_format_time() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", format_time("2026-11-28T10:00:00+00:00"))
    assert format_time("2026-11-28T10:00:00.123456") == "2026-11-28 10:00:00"
    assert format_time("yesterday") == "yesterday"
    assert format_time(None) == "-"


def test_small_formatters() -> None:
    assert short_sha("1a2b3c4d5e6f7a8b9c", 8) == "1a2b3c4d…"
    assert short_sha("abc") == "abc"
    assert short_sha(None) == "-"
    assert human_size(None) == "-"
    assert human_size(512) == "512 B"
    assert human_size(2048) == "2.0 KiB"
    assert human_size(5 * 1024**3) == "5.0 GiB"
    assert jsonable({"a": np.array([b"x", b"y"], dtype=object), "b": np.float32(1.5), "c": float("nan")}) == {
        "a": ["x", "y"],
        "b": 1.5,
        "c": None,
    }


def test_tables_render_api_objects() -> None:
    models = render(
        models_table(
            [
                {
                    "name": "churn",
                    "source": "registry",
                    "latest_version": 3,
                    "version_count": 3,
                    "aliases": {"production": 2},
                    "default_version": 2,
                    "description": "",
                }
            ]
        )
    )
    assert "churn" in models
    assert "production→2" in models
    versions = render(
        versions_table(
            [
                {
                    "model": "churn",
                    "version": 1,
                    "framework": "sklearn",
                    "sha256": "ab" * 32,
                    "size": 4096,
                    "aliases": ["production"],
                    "state": "failed",
                    "state_reason": "boom",
                    "created_at": "2026-11-28T10:00:00+00:00",
                }
            ]
        )
    )
    assert "sklearn" in versions
    assert "abababababab…" in versions
    assert "4.0 KiB" in versions
    assert "failed (boom)" in versions
    signature = render(
        signature_table(
            {
                "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
                "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
            }
        )
    )
    assert "[-1, 4]" in signature
    assert "predict" in signature
    history = render(
        alias_history_table(
            [{"alias": "p", "from_version": None, "to_version": 1, "changed_by": "local", "changed_at": "t0"}]
        )
    )
    assert "local" in history
    outputs = render(outputs_table({"y": np.array([1.0, 2.5])}, title="m:1"))
    assert "m:1" in outputs
    assert "2.5" in outputs


# -- command-line behaviour without a server -------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["show", "churn:zero"],
        ["load", "churn"],
        ["unload", "bad name:1"],
        ["delete", "churn:0"],
        ["versions", "churn:1"],
        ["push", "model.joblib", "--name", "bad/name"],
        ["predict", "churn:1"],
        ["predict", "churn:1", "--data", "[1]", "--file", "x.npy"],
        ["predict", "churn:1", "--data", "[[1], [2, 3]]"],
        ["alias", "set", "churn", "production", "two"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--url", closed_port_url()])
    assert result.exit_code == 2, result.output


def test_whole_model_delete_needs_yes() -> None:
    result = runner.invoke(app, ["delete", "churn", "--url", closed_port_url()])
    assert result.exit_code == 1
    assert "--yes" in result.output


def test_unreachable_server_is_one_line_error() -> None:
    url = closed_port_url()
    result = runner.invoke(app, ["models", "--url", url])
    assert result.exit_code == 1
    assert "Error:" in result.output
    assert f"server at {url} is not reachable" in result.output
    assert "Traceback" not in result.output


def test_url_comes_from_the_environment() -> None:
    url = closed_port_url()
    result = runner.invoke(app, ["versions", "churn"], env={"FERRYMAN_URL": url})
    assert result.exit_code == 1
    assert url in result.output


def test_serve_rejects_bad_settings_before_starting(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["serve", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2
    broken = tmp_path / "ferryman.yaml"
    broken.write_text("port: [1\n")
    result = runner.invoke(app, ["serve", "--config", str(broken)])
    assert result.exit_code == 1
    assert "invalid settings" in result.output
    out_of_range = runner.invoke(app, ["serve", "--port", "70000", "--home", str(tmp_path / "home")])
    assert out_of_range.exit_code == 1
    assert "port" in out_of_range.output
    absent = runner.invoke(app, ["serve", str(tmp_path / "missing.joblib")])
    assert absent.exit_code == 2
