"""Task sources and target resolution."""
import json

import pytest

from mtcmpi.errors import UsageError
from mtcmpi.tasks import (CALL_KEYWORDS, CountSource, ItemsSource, ParamsSource, check_call,
                          parse_value, resolve)


def test_resolve_finds_functions_and_methods():
    assert resolve("tests.tasks_for_tests:square")(3) == 9
    assert resolve("os.path:join")("a", "b") == "a/b"
    assert resolve("collections:OrderedDict.fromkeys")("ab") == {"a": None, "b": None}


@pytest.mark.parametrize("target, words", [
    ("nosuchmodule_xyz:func", "cannot import module 'nosuchmodule_xyz'"),
    ("tests.tasks_for_tests:nosuch", "has no attribute 'nosuch'"),
    ("tests.tasks_for_tests:NOT_CALLABLE", "is a int, not callable"),
    ("justamodule", "not of the form package.module:function"),
    (":f", "not of the form"),
])
def test_resolve_names_the_problem(target, words):
    with pytest.raises(UsageError, match=words.replace("(", r"\(")):
        resolve(target)


def test_parse_value():
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("2.5e-3") == 0.0025
    assert parse_value("abc") == "abc"
    assert parse_value("") == ""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_rows_become_keyword_arguments(tmp_path):
    src = ParamsSource(write(tmp_path, "p.csv", "a, b\n1,2.5\n3,x\n\n"))
    assert src.count() == 2 and src.call == CALL_KEYWORDS
    assert list(src.tasks()) == [(0, {"a": 1, "b": 2.5}), (1, {"a": 3, "b": "x"})]


def test_jsonl_and_json(tmp_path):
    rows = [{"a": 1, "b": [1, 2]}, {"a": 2, "b": []}]
    jl = ParamsSource(write(tmp_path, "p.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n"))
    js = ParamsSource(write(tmp_path, "p.json", json.dumps(rows)))
    assert jl.count() == js.count() == 2
    assert list(jl.tasks()) == list(js.tasks()) == list(enumerate(rows))


@pytest.mark.parametrize("name, text, words", [
    ("p.csv", "", "is empty"),
    ("p.csv", "a,b\n1,2\n3\n", "line 3: 1 values for 2 columns"),
    ("p.jsonl", '{"a": 1}\n{"b": 2}\n', "line 2: columns \\['b'\\] differ"),
    ("p.jsonl", '{"a": 1}\n{oops\n', "line 2: not valid JSON"),
    ("p.jsonl", '[1, 2]\n', "line 1: not a JSON object"),
    ("p.json", '{"a": 1}', "expected a JSON list"),
    ("p.json", '[1, 2', "the file: not valid JSON"),
    ("p.json", '[{"a": 1}, 2]', "item 1: not a JSON object"),
    ("p.txt", "a\n1\n", "unknown type '.txt'"),
])
def test_bad_params_files_are_named(tmp_path, name, text, words):
    path = write(tmp_path, name, text)
    with pytest.raises(UsageError, match=words):
        ParamsSource(path).count()


def test_missing_params_file(tmp_path):
    with pytest.raises(UsageError, match="No such file"):
        ParamsSource(str(tmp_path / "nope.csv")).count()


def test_take_streams_selected_ids(tmp_path):
    src = ParamsSource(write(tmp_path, "p.csv", "x\n" + "\n".join(map(str, range(10))) + "\n"))
    assert list(src.take(range(2, 10, 3))) == [(2, {"x": 2}), (5, {"x": 5}), (8, {"x": 8})]
    assert list(CountSource(10).take(range(3, 5))) == [(3, 3), (4, 4)]
    assert list(ItemsSource(iter("abc")).take([1])) == [(1, "b")]


def test_count_source_rejects_negative():
    with pytest.raises(UsageError, match="--count must be >= 0"):
        CountSource(-1)


def test_check_call_catches_wrong_arguments():
    check_call(lambda a, b=0: None, CALL_KEYWORDS, {"a": 1}, "row 0")
    with pytest.raises(UsageError, match="cannot take the arguments of row 0: .*'c'"):
        check_call(lambda a, b=0: None, CALL_KEYWORDS, {"a": 1, "c": 2}, "row 0")


@pytest.mark.parametrize("module, words", [
    ("import sys\nsys.exit('no licence on this node')\n", "SystemExit: no licence on this node"),
    ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ("class E(BaseException):\n    def __str__(self):\n        raise ValueError\nraise E()\n",
     "E: <exception str() failed>"),
])
def test_any_way_out_of_a_module_import_is_a_usage_error(tmp_path, monkeypatch, module, words):
    (tmp_path / "leaves_at_import.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match=f"importing 'leaves_at_import'.*{words.replace('(', '.').replace(')', '.')}"):
        resolve("leaves_at_import:f")


def rows_of(path):
    source = ParamsSource(str(path))
    source.count()
    return [row for _, row in source.tasks()]


@pytest.mark.parametrize("name, data, words", [
    ("latin.csv", "a,b\n1,caf\xe9\n".encode("latin-1"), "line 2: not UTF-8 (byte 0xe9 at column 6): save it as UTF-8"),
    ("latin.jsonl", '{"a": 1}\n{"a": "caf\xe9"}\n'.encode("latin-1"), "line 2: not UTF-8"),
    ("latin.json", '[{"a": "caf\xe9"}]'.encode("latin-1"), "line 1: not UTF-8"),
    ("dup.csv", b"a,b,a\n1,2,3\n", "column 'a' appears more than once in the header"),
    ("cr.csv", b"a\n1\r2\n", "line 2: not a valid CSV row"),
])
def test_params_files_that_cannot_be_read_as_given_are_one_line(tmp_path, name, data, words):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
        rows_of(tmp_path / name)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_params_with_a_bom_a_huge_cell_and_crlf_read_as_plain_utf8(tmp_path):
    big = "x" * 300_000   # over csv's default 128 KB field limit
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfa,b\r\n1," + big.encode() + b"\r\n")
    assert rows_of(tmp_path / "bom.csv") == [{"a": 1, "b": big}]
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert rows_of(tmp_path / "bom.jsonl") == [{"a": 1}]


def test_the_fingerprint_does_not_depend_on_line_endings_or_a_bom(tmp_path):
    import hashlib
    (tmp_path / "lf.csv").write_bytes(b"a,b\n1,2\n3,4\n")
    (tmp_path / "crlf.csv").write_bytes(b"\xef\xbb\xbfa,b\r\n1,2\r\n3,4\r\n")
    (tmp_path / "other.csv").write_bytes(b"a,b\n1,2\n3,5\n")
    prints = {}
    for name in ("lf", "crlf", "other"):
        digest = hashlib.sha256()
        keys = ParamsSource(str(tmp_path / f"{name}.csv")).fingerprint(digest)
        prints[name] = (digest.hexdigest(), keys.tolist())
    assert prints["lf"] == prints["crlf"] != prints["other"]


def test_count_keys_are_splitmix64_of_the_id_and_distinct():
    import hashlib
    keys = CountSource(1 << 21).fingerprint(hashlib.sha256())   # two blocks of count_keys
    assert keys[0] == 0xE220A8397B1DCDAF and keys[1] == 0x910A2DEC89025CC1   # splitmix64 of 0, 1
    assert len(set(keys.tolist())) == len(keys)
