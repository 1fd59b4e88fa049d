"""The catalogue's JSON Schema (router/catalogue/catalogue.schema.json) stays true to the parser.

Editors complete and check config.yaml with it, so it must accept every file
parse_config accepts, reject the usual mistakes, and list exactly the keys and
defaults of the dataclasses in catalogue/config.py. It is drawn from their
key() descriptions (catalogue/schema.py, `make schema`), as are the key tables
of docs/configuration.md, and the parser checks what the same descriptions say.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, fields, is_dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from router.catalogue.config import (
    NAME_RE,
    RESERVED_FLAGS,
    RUNTIME_FIELDS,
    ApiKey,
    ClusterSettings,
    Config,
    ConfigError,
    MemorySettings,
    ModelSpec,
    PeerSpec,
    Rate,
    RouterSettings,
    SourcesSpec,
    SpawnSpec,
)
from router.catalogue.keys import METADATA, Described, keys_of, list_items
from router.catalogue.parse import parse_config
from router.catalogue.schema import DOCS_FILE, MAKE_TARGET, key_table, schema_text, with_key_tables
from router.catalogue.yamlio import read_yaml

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_PATH = ROOT / "router" / "catalogue" / "catalogue.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

# Each section of the schema and the dataclass whose fields are its keys.
SECTIONS = [
    ("router", RouterSettings, ()),
    ("model", ModelSpec, ("name",)),
    ("spawn", SpawnSpec, ()),
    ("sources", SourcesSpec, ()),
    ("cluster", ClusterSettings, ()),
    ("peer", PeerSpec, ("name",)),
]
# Keys a section needs, with no default (an API key's `key` is the other such key).
NEEDED = {(PeerSpec, "url")}


def section(name: str) -> dict[str, Any]:
    return SCHEMA["$defs"][name]["properties"]


def file_key(f: Any) -> str:
    """A field's key in the file: its name, or the name its key() gives (a model's
    display name is `name`, the dataclass's `name` being the model's own)."""
    return f.metadata[METADATA].name or f.name


def schema_accepts(data: Any) -> bool:
    return VALIDATOR.is_valid(data)


def parser_accepts(data: Any) -> bool:
    try:
        parse_config(data)
    except ConfigError:
        return False
    return True


def test_schema_file_is_drawn_from_the_keys():
    """The checked-in schema is what catalogue/schema.py draws from catalogue/config.py now."""
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), \
        f"{SCHEMA_PATH.relative_to(ROOT)} is stale: run `{MAKE_TARGET}`"


def test_docs_key_tables_are_drawn_from_the_keys():
    text = DOCS_FILE.read_text(encoding="utf-8")
    assert re.findall(r"<!-- keys:start (\w+) ", text) == ["router", "sources", "cluster", "spawn", "models",
                                                            "selectors", "profiles", "peers"]
    assert text.count("<!-- keys:end -->") == 8
    assert text == with_key_tables(text), f"the key tables of {DOCS_FILE.relative_to(ROOT)} are stale: run " \
        f"`{MAKE_TARGET}`"


def test_docs_tables_list_every_key_with_its_doc():
    table = key_table("router")
    assert "| `port` | `8082` | The one port clients talk to (0-65535). |" in table
    assert "| `memory.reserve` | `1GiB` |" in table and "| `api_keys[].role` | `inference` |" in table
    assert all(f"| `{k.name}` |" in key_table("models") for k in keys_of(ModelSpec))


def test_schema_is_valid_draft_2020_12():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", ["config.example.yaml", "demo/config.yaml"])
def test_shipped_catalogues_validate(path):
    data = read_yaml((ROOT / path).read_text(encoding="utf-8"))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(data)]
    assert errors == []


def test_example_points_editors_at_the_schema():
    first = (ROOT / "config.example.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=router/catalogue/catalogue.schema.json"
    assert (ROOT / first.split("=", 1)[1]).is_file()


def test_top_level_keys_are_the_config_fields():
    assert set(SCHEMA["properties"]) == {f.name for f in fields(Config)} - set(RUNTIME_FIELDS)


@pytest.mark.parametrize(("name", "cls", "exclude"), SECTIONS, ids=[s[0] for s in SECTIONS])
def test_keys_are_the_dataclass_fields(name, cls, exclude):
    """A key added to the code but not to the schema (or the other way round) fails here."""
    assert set(section(name)) == {file_key(f) for f in fields(cls) if f.name not in exclude}
    assert SCHEMA["$defs"][name]["additionalProperties"] is False


@pytest.mark.parametrize(("name", "cls", "exclude"), SECTIONS, ids=[s[0] for s in SECTIONS])
def test_every_key_has_a_description_and_the_dataclass_default(name, cls, exclude):
    props = section(name)
    for f in fields(cls):
        if f.name in exclude:
            continue
        prop = props[file_key(f)]
        assert prop.get("description"), f"{name}.{f.name} has no description"
        if (cls, f.name) in NEEDED:
            assert "default" not in prop and f.name in SCHEMA["$defs"][name]["required"], f"{name}.{f.name}"
            continue
        assert "default" in prop, f"{name}.{f.name} has no default"
        default = f.default
        nested = f.default_factory() if f.default_factory is not MISSING else None
        if is_dataclass(nested):  # a nested section: its defaults as a mapping
            assert prop["default"] == asdict(nested), f"{name}.{f.name}"
            assert set(prop["properties"]) == {g.name for g in fields(nested)}, f"{name}.{f.name}"
            continue
        if isinstance(nested, dict):  # a mapping of values (set_params, metadata): empty, a fresh one each time
            assert prop["default"] == nested == {}, f"{name}.{f.name}"
            continue
        assert default is not MISSING, f"{name}.{f.name}: the dataclass field has no plain default"
        if default is None:
            assert prop["default"] is None, f"{name}.{f.name}"
            continue
        if isinstance(prop["default"], dict):  # env: pairs in the dataclass, a mapping in the file
            assert prop["default"] == dict(default), f"{name}.{f.name}"
        elif isinstance(default, tuple):
            assert prop["default"] == list(default), f"{name}.{f.name}"
        else:
            assert prop["default"] == default and type(prop["default"]) is type(default), f"{name}.{f.name}"


def test_names_and_flags_follow_the_code():
    models = next(s for s in SCHEMA["properties"]["models"]["anyOf"] if s.get("type") == "object")
    assert models["propertyNames"]["pattern"] == NAME_RE.pattern
    alias = section("model")["aliases"]["anyOf"][1]["anyOf"][0]
    assert alias["pattern"] == NAME_RE.pattern
    flag = section("model")["allow_args"]["anyOf"][1]["anyOf"][0]
    assert set(flag["not"]["enum"]) == RESERVED_FLAGS


def model(**entry: Any) -> dict[str, Any]:
    return {"models": {"m": entry}}


P = {"path": "/m.gguf"}

BAD = {
    "unknown top-level key": {"routers": {}},
    "unknown router key": {"router": {"hots": "127.0.0.1"}},
    "router is a list": {"router": []},
    "port is not a number": {"router": {"port": "abc"}},
    "port out of range": {"router": {"port": 70000}},
    "port is a float string": {"router": {"port": "8082.5"}},
    "port is a boolean": {"router": {"port": True}},
    "port is null": {"router": {"port": None}},
    "models_max negative": {"router": {"models_max": -1}},
    "health_timeout zero": {"router": {"health_timeout": 0}},
    "port_range of one port": {"router": {"port_range": [50000]}},
    "port_range below 1024": {"router": {"port_range": [80, 90]}},
    "port_range of strings": {"router": {"port_range": ["50000", "50999"]}},
    "short admin token": {"router": {"admin_token": "short"}},
    "api key with a space": {"router": {"api_keys": ["has a space"]}},
    "watch_config is a string": {"router": {"watch_config": "yes"}},
    "host is null": {"router": {"host": None}},
    "unknown spawn key": {"spawn": {"cmd": ["x"]}},
    "empty spawn command": {"spawn": {"command": []}},
    "health endpoint without slash": {"spawn": {"health_endpoint": "health"}},
    "unknown sources key": {"sources": {"import_dirz": []}},
    "hf_cache is a string": {"sources": {"hf_cache": "no"}},
    "models is a list of names": {"models": ["a"]},
    "state foo": model(**P, state="foo"),
    "model name with a '..' part": {"models": {"org/../model": P}},
    "model name with '//'": {"models": {"org//model": P}},
    "model name ending in '/'": {"models": {"org/model/": P}},
    "model name with a space": {"models": {"my model": P}},
    "model without path nor spawn": model(group="g"),
    "model with null path": model(path=None),
    "model entry is null": {"models": {"m": None}},
    "unknown model key": model(**P, alias=["x"]),
    "alias starting with a slash": model(**P, aliases=["/a/b"]),
    "args is a mapping": model(**P, args={"a": 1}),
    "env is a list of names": model(**P, env=["A"]),
    "env value is a list": model(**P, env={"A": [1]}),
    "unlisted is a string": model(**P, unlisted="true"),
    "ttl is negative": model(**P, ttl=-1),
    "allow_args not a flag": model(**P, allow_args=["temp"]),
    "allow_args a reserved flag": model(**P, allow_args=["--port"]),
    "cluster start_wait negative": {"cluster": {"start_wait": -1}},
    "display name empty": model(**P, name=""),
    "display name blank": model(**P, name="  "),
    "display name a list": model(**P, name=["Gemma"]),
    "max_tokens_default negative": model(**P, max_tokens_default=-1),
    "router max_tokens_default a fraction": {"router": {"max_tokens_default": 1.5}},
    "memory.unified is a word": {"router": {"memory": {"unified": "yes"}}},
    "url that is not http": model(url="ftp://host/v1"),
    "url with a path too": model(url="http://host:8080", path="/m.gguf"),
    "url with a spawn too": model(url="http://host:8080", spawn=None),
    "port out of range for a model": model(**P, port=70000),
    "stop_command a mapping": model(**P, stop_command={"docker": "stop"}),
    "peer without url": {"peers": {"p": {"models": ["a"]}}},
    "peer with an unknown key": {"peers": {"p": {"url": "http://h:1", "proxy": "http://h:1"}}},
    "peers a list": {"peers": ["http://h:1"]},
    "set_params a list": model(**P, set_params=[1]),
    "virtual id that is no name": model(**P, set_params_by_id={"a b": {"top_k": 1}}),
    "virtual id without params": model(**P, set_params_by_id={"m:x": 1}),
    "capabilities with an unknown modality": model(**P, capabilities={"in": ["smell"]}),
    "capabilities with an unknown key": model(**P, capabilities={"vision": True}),
    "timeouts of zero": model(**P, timeouts={"connect": 0}),
    "log level loud": {"router": {"log_level": "loud"}},
    "a profile without pins": {**model(**P), "profiles": {"p": {"pins": {}}}},
    "a profile's pins as a list": {**model(**P), "profiles": {"p": {"pins": ["m"]}}},
}

GOOD = {
    "empty file": None,
    "empty sections": {"router": None, "spawn": None, "sources": None, "models": None},
    "every router key": {"router": {
        "host": "0.0.0.0", "port": 0, "models_max": 0, "port_range": [1024, 65535], "health_timeout": 0.1,
        "stop_timeout": 1, "connect_timeout": 2.5, "read_timeout": 60, "max_body_bytes": 1024, "log_lines": 1,
        "admin_token": "${ADMIN}", "api_keys": ["secret-key-1", "${KEY}"], "notify_model_swap": True,
        "startup_model": "m", "ttl": 0, "drain_timeout": 0, "watch_config": False, "swap_patience": 0,
        "kv_persistence": False, "slot_save_path": "~/slots", "slot_save_max_bytes": 0, "slot_save_timeout": 5,
        "ui_path": None, "max_tokens_default": 256,
    }, **model(**P)},
    "numbers from the environment": {"router": {"port": "${PORT}", "models_max": "${N}", "ttl": "${TTL}"}},
    "numbers written as strings": {"router": {"port": " 8082 ", "max_body_bytes": "1_048_576",
                                              "health_timeout": "1e2", "read_timeout": ".5", "ttl": "inf"}},
    "one api key as a string": {"router": {"api_keys": "${KEY}"}},
    "strings written as numbers": {"router": {"host": 0, "startup_model": 7}},
    "spawn command as one string": {"spawn": {"command": "my-server", "health_endpoint": "${HEALTH}"}},
    "every model key": model(path="~/m.gguf", aliases=["m2", "m:q4"], group="g", args=["--ctx-size", 8192],
                             env={"CUDA_VISIBLE_DEVICES": 0, "X": "${PORT}", "FLAG": True},
                             spawn={"command": ["vllm", "serve", "$path"], "health_endpoint": "/v1/models"},
                             mmproj="~/p.gguf", state="auto", ttl="600", unlisted=True,
                             allow_args=["--temp", "-c", "${FLAG}"], name="Gemma 3 (creative)",
                             max_tokens_default=0),
    "max_tokens_default from the environment": model(**P, max_tokens_default="${N}"),
    "model with only a spawn": model(spawn={"command": ["x", "--port", "$port"]}),
    "model with a default spawn": model(spawn=None),
    "state from the environment": model(**P, state="${STATE}"),
    "single alias and flag as strings": model(**P, aliases="alias", allow_args="--top-k", args="--jinja"),
    "empty env and models": {"models": {"m": {**P, "env": None}, "n": {**P, "env": []}}},
    "names YAML 1.1 would read as booleans": {"models": {"no": P, "on": P, "7b": P}},
    "model ttl null": model(**P, ttl=None),
    "sources": {"sources": {"dirs": ["~/models", "${MODELS}"], "hf_cache": False}},
    "one source dir as a string": {"sources": {"dirs": "/models"}},
    "every cluster key": {"cluster": {"placement": "round_robin", "replicas": 2, "queue_threshold": 3,
                                      "front_grace": 10, "start_wait": 0}},
    "memory unified auto and true": {"router": {"memory": {"unified": "auto", "ram": "auto", "probe": True}}},
    "memory unified false": {"router": {"memory": {"unified": False}}},
    "external model": model(url="https://api.example.com/v1", api_key="${KEY}", health_endpoint="/health"),
    "container model": model(spawn={"command": ["docker", "run", "-p", "8999:8080", "img"]}, port=8999,
                             stop_command="docker stop ${MODEL_ID}"),
    "stop command as a list": model(**P, stop_command=["kill", "${PID}"]),
    "peers": {"peers": {"lab": {"url": "http://lab:8082"},
                        "hosted": {"url": "https://openrouter.ai/api/v1", "api_key": "${KEY}",
                                   "models": ["qwen/*", "meta-llama/llama-3.1-8b-instruct"]}}},
    "capture_bytes as a size": {"router": {"capture_bytes": "16MiB"}},
    "request rewriting": model(**P, strip_params=["top_k"], use_model_name="org/m",
                               set_params={"temperature": 0.5, "top_k?": 40, "stop": ["x"], "kw": {"a": None}},
                               set_params_by_id={"m:hot": {"temperature": 1.2}, "m": {}}),
    "what /v1/models tells": model(**P, description="A model", metadata={"a": [1, {"b": None}], "c": "${KEY}"},
                                   capabilities={"in": ["text", "image"], "out": ["text"], "tools": True,
                                                 "reranker": False, "context": 8192}),
    "per-model limits": model(**P, timeouts={"connect": 2, "read": "${TTL}"}, stop_timeout=3, swap_progress=False),
    "log settings": {"router": {"log_level": "debug", "log_format": "json", "log_file": "router.log"}},
    "a profile": {**model(**P), "profiles": {"p": {"description": "d", "pins": {"x": "m", "m": None}}}},
}

ENVIRONMENT = {"PORT": "9000", "N": "2", "TTL": "30", "KEY": "environment-key", "ADMIN": "admin-token-123",
               "STATE": "manual", "HEALTH": "/health", "MODELS": "/srv/models", "FLAG": "--min-p"}


@pytest.fixture
def environment(monkeypatch):
    for k, v in ENVIRONMENT.items():
        monkeypatch.setenv(k, v)


@pytest.mark.parametrize("data", list(BAD.values()), ids=list(BAD))
def test_bad_catalogues_are_rejected_by_schema_and_parser(data, environment):
    assert not parser_accepts(data)
    assert not schema_accepts(data)


@pytest.mark.parametrize("data", list(GOOD.values()), ids=list(GOOD))
def test_good_catalogues_are_accepted_by_schema_and_parser(data, environment):
    assert parser_accepts(data)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(data)]
    assert errors == []


# Every key of every section, where a file writes it (for the checks drawn from key()).
PLACES: list[tuple[str, Any, Any]] = [
    ("router", RouterSettings, lambda v: {"router": v}),
    ("router.memory", MemorySettings, lambda v: {"router": {"memory": v}}),
    ("spawn", SpawnSpec, lambda v: {"spawn": v}),
    ("models.m", ModelSpec, lambda v: {"models": {"m": {**P, **v}}}),
    ("sources", SourcesSpec, lambda v: {"sources": v}),
    ("cluster", ClusterSettings, lambda v: {"cluster": v}),
    ("peers.p", PeerSpec, lambda v: {"peers": {"p": {"url": "http://peer:8080", **v}}}),
    ("router.api_keys[0]", ApiKey, lambda v: {"router": {"api_keys": [{"key": "team-key-0123", **v}]}}),
]
EVERY_KEY = [(where, k, put) for where, cls, put in PLACES for k in keys_of(cls)]


def wrong_values(k: Described) -> list[Any]:
    """Values key k's description rules out: below or above its bounds, outside its choices,
    of another type."""
    tp, spec = k.type, k.key
    lo, hi = k.bounds
    if spec.kind in ("size", "budget", "budgets"):
        return [-1, "lots", [-1] if spec.kind == "budgets" else [1]]
    if spec.choices:
        return ["none of them", ["a list"]]
    if tp in (int, float):
        return [lo - 1, "abc", [1]] + ([hi + 1] if hi is not None else [])
    if tp is bool:
        return ["yes", 1]
    if tp is str:
        short = ["x" * (spec.min_length - 1)] if spec.min_length else []
        return [["a list"], {"a": "mapping"}, *short] + ([""] if spec.pattern else [])
    if tp == tuple[int, int]:
        return [[1], [lo - 1, lo], [lo, hi + 1]]  # (first <= last is the parser's alone)
    if list_items(tp) == tuple[str, str]:
        return [["A"], {"A": [1]}]
    if list_items(tp) is not None:
        return [{"a": "mapping"}, [["nested"]]]
    if tp is Rate:
        return ["5/day", "0/min"]
    return [["a list"]]  # a section


def right_values(k: Described) -> list[Any]:
    """Values key k's description allows: its default, each choice, its bounds."""
    lo, hi = k.bounds
    if k.key.choices:
        return list(k.key.choices)
    if k.type in (int, float) and k.key.kind is None:
        return [lo] + ([hi] if hi is not None else [])
    return []


@pytest.mark.parametrize(("where", "k", "put"), EVERY_KEY, ids=[f"{w}.{k.name}" for w, k, _ in EVERY_KEY])
def test_parser_and_schema_check_what_each_key_describes(where, k, put):
    """Bounds, allowed values and types come from the key's description, for the parser and
    the schema alike; a wrong value is an error that names the key."""
    for value in wrong_values(k):
        data = put({k.name: value})
        with pytest.raises(ConfigError) as e:
            parse_config(data, "c.yaml")
        named = f"c.yaml: {where}" if k.key.secret else f"c.yaml: {where}.{k.name}"  # an API key: its entry
        assert str(e.value).startswith(named) and "expected" in str(e.value), value
        assert not schema_accepts(data), value
    for value in right_values(k):
        data = put({k.name: value})
        assert parser_accepts(data) and schema_accepts(data), value


def test_unknown_keys_are_named_with_the_keys_that_exist():
    with pytest.raises(ConfigError) as e:
        parse_config(model(**P, paht="/x"), "c.yaml")
    expected = ", ".join(sorted(k.name for k in keys_of(ModelSpec)))
    assert str(e.value) == f"c.yaml: models.m.paht: unknown key (expected one of: {expected})"


NUMBER_TEXTS = ["1", "+1", "-0", " 7 ", "1_000", "01", "1.5", "1.", ".5", "1e3", "1E-3", "1_0.5", "inf", "-Infinity",
                "nan", "", " ", "1__0", "_1", "1_", "1.2.3", "e3", "1e", "0x10", "1,5", "abc", "$PORT", "${1X}"]


@pytest.mark.parametrize("text", NUMBER_TEXTS)
@pytest.mark.parametrize(("key", "convert"), [("port", int), ("health_timeout", float)])
def test_numbers_written_as_strings_follow_python(key, convert, text):
    """A number given as a string passes the schema exactly when int() or float() reads it.

    The range (port 0-65535, timeouts >= 0.1) is checked by the parser only: a string may hold any value.
    """
    try:
        convert(text)
        readable = True
    except ValueError:
        readable = False
    data = {"router": {key: text}}
    assert schema_accepts(data) == readable
    if parser_accepts(data):
        assert schema_accepts(data)


def test_schema_ships_in_the_package():
    resource = files("router.catalogue").joinpath("catalogue.schema.json")
    assert resource.is_file()
    assert json.loads(resource.read_text(encoding="utf-8")) == SCHEMA


def test_unquoted_environment_numbers_in_yaml(environment):
    """`port: ${PORT}` is a string in YAML; the schema takes it where a number goes, as the parser does."""
    data = read_yaml("router:\n  port: ${PORT}\n  ttl: ${TTL}\nmodels:\n  m:\n    path: /m.gguf\n    ttl: ${TTL}\n")
    assert parser_accepts(data) and schema_accepts(data)
    assert not schema_accepts(read_yaml("models:\n  m: {path: /m.gguf, state: foo}\n"))
