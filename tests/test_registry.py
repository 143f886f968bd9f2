"""The client registry: built-ins and plugins declare themselves once; the rest derives.

Plugins are tested as users install them: a distribution's ``*.dist-info`` with an
``entry_points.txt`` on ``sys.path`` of a fresh interpreter (examples/plugin/ is the one
docs/plugins.md walks through), against a real TCP server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lambda_conn
from lambda_conn import _registry
from lambda_conn._entry_points import entry_points
from tests.servers import SilentTCPServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin"
INTEGRATIONS = ROOT / "lambda_conn" / "_integrations"


def test_every_integration_module_declares_one_client_and_clients_derives_from_them() -> None:
    import importlib

    declared = []
    for path in sorted(INTEGRATIONS.glob("_*.py")):
        if path.stem.startswith("__"):
            continue
        module = importlib.import_module(f"lambda_conn._integrations.{path.stem}")
        if hasattr(module, "INTEGRATION"):
            declared.append(module.INTEGRATION.name)
        else:  # a helper shared by integrations: it must not look like one
            assert "patch" not in "".join(vars(module)), path.name
    assert len(declared) == len(set(declared))
    assert set(declared) <= set(lambda_conn.CLIENTS)
    assert set(lambda_conn.CLIENTS) - set(declared) == set()  # no plugin in this interpreter
    hooked = {m for i in _registry.integrations() for m in i.hooks}
    assert {"pymysql", "sqlalchemy", "requests", "urllib3", "httpx", "psycopg"} <= hooked


def _kind_calls_without_a_probe() -> tuple[int, list[str]]:
    """Every ``Kind(...)`` call in the built-in integrations, and those that pass neither
    ``is_open=`` nor ``alive=`` (or hide their keywords in ``**kwargs``)."""
    import ast

    calls, missing = 0, []
    for path in sorted(INTEGRATIONS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name != "Kind":
                continue
            calls += 1
            keywords = {kw.arg for kw in node.keywords}
            if None in keywords or not keywords & {"is_open", "alive"}:
                missing.append(f"{path.name}:{node.lineno}")
    return calls, missing


def test_every_kind_declares_how_a_reused_one_is_probed() -> None:
    """Forgetting the probe must not silently trust a dead reused client: a Kind with
    neither ``is_open`` nor ``alive`` gets ``alive=reconnects`` (always trusted), so every
    built-in Kind declares one of them, and every Kind the fourteen clients register at run
    time is one of those declarations."""
    import importlib

    from lambda_conn import _tracking
    from lambda_conn._kinds import Kind, _by_type

    calls, missing = _kind_calls_without_a_probe()
    assert calls >= 14
    assert missing == []
    _tracking.install()
    for module in sorted({m for i in _registry.integrations() for m in i.hooks}):
        importlib.import_module(module)  # each patched on import, registering its kinds
    registered = list(_by_type.values())
    assert {kind.client for kind in registered} == set(lambda_conn.CLIENTS)  # all fourteen
    assert len(lambda_conn.CLIENTS) == 14
    declared = {
        id(value)
        for name, module in list(sys.modules.items())
        if name.startswith("lambda_conn._integrations.")
        for value in vars(module).values()
        if isinstance(value, Kind)
    }
    for kind in registered:
        assert id(kind) in declared, kind  # so its probe was checked above
        assert callable(kind.alive), kind
        assert kind.close is not None or kind.aclose is not None, kind


def test_unknown_client_names_the_accepted_ones() -> None:
    with pytest.raises(lambda_conn.ConfigurationError) as info:
        lambda_conn.managed_connection(clients=["pymsql"])
    message = str(info.value)
    assert message.startswith("clients=") and "is not valid" in message
    for name in lambda_conn.CLIENTS:
        assert name in message


def test_register_client_validates_its_input() -> None:
    with pytest.raises(lambda_conn.ConfigurationError, match=r"lambda_conn\.Integration"):
        lambda_conn.register_client("redis")  # type: ignore[arg-type]
    with pytest.raises(lambda_conn.ConfigurationError, match="client name"):
        lambda_conn.Integration("all", hooks={"x": lambda m: None})
    with pytest.raises(lambda_conn.ConfigurationError, match="hooks"):
        lambda_conn.Integration("x", hooks={})
    taken = lambda_conn.Integration("pymysql", hooks={"pymysql": lambda m: None})
    with pytest.raises(lambda_conn.ConfigurationError, match="not taken already"):
        lambda_conn.register_client(taken)


# --------------------------------------------------------------------------- entry points


def _dist_info(site: Path, dist: str, entry_points_txt: str) -> None:
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points_txt))


def test_entry_points_read_as_importlib_metadata_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    first, second = tmp_path / "a", tmp_path / "b"
    _dist_info(first, "plug_one", "[lambda_conn.clients]\nmod_a = plug_one:I\n[other]\nx = y:z\n")
    _dist_info(first, "plug_two", "# note\n[lambda_conn.clients]\n mod_b = plug_two:INTEGRATION\n")
    _dist_info(second, "Plug_One", "[lambda_conn.clients]\nshadowed = plug_one:I\n")  # loses
    (first / "noentry-1.0.dist-info").mkdir()
    (first / "plain.egg-info").write_text("an egg-info file, not a directory")
    path = [str(first), str(second), str(tmp_path / "missing")]
    monkeypatch.setattr(sys, "path", path)
    theirs = {
        (ep.name, ep.value, ep.dist.name if ep.dist else "")
        for ep in importlib.metadata.entry_points(group="lambda_conn.clients")
    }
    ours = {(ep.name, ep.value, ep.dist) for ep in entry_points("lambda_conn.clients")}
    assert ours == theirs
    assert ours == {
        ("mod_a", "plug_one:I", "plug_one"),
        ("mod_b", "plug_two:INTEGRATION", "plug_two"),
    }


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    """The example plugin installed as a wheel installs it: modules plus a dist-info."""
    site = tmp_path / "site"
    site.mkdir()
    for name in ("toyclient.py", "lambda_conn_toyclient.py"):
        shutil.copy(EXAMPLE / name, site / name)
    _dist_info(
        site,
        "lambda_conn_toyclient",
        "[lambda_conn.clients]\ntoyclient = lambda_conn_toyclient:INTEGRATION\n",
    )
    return site


def run_with(site: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


PLUGIN_STORY = """
    import json, logging, sys
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import lambda_conn
    from lambda_conn import managed_connection
    kept = []

    @managed_connection
    def handler(event, context):
        import toyclient
        conn = toyclient.connect("127.0.0.1", int(sys.argv[1]))
        conn.send(b"hello")
        kept.append(conn)  # the leak the plugin exists for
        return "ok"

    loaded_before = "lambda_conn_toyclient" in sys.modules
    assert handler({}, None) == "ok"

    # remote: a connection its close leaves open is reported with host:port
    import lambda_conn_toyclient
    from lambda_conn import reused_connection
    leaks = []
    class Capture(logging.Handler):
        def emit(self, record):
            event = json.loads(record.getMessage())
            if event["event"] == "connections_leaked":
                leaks.extend(event["connections"])
    logging.getLogger("lambda_conn").addHandler(Capture())
    close = lambda_conn_toyclient.CONNECTION.close
    lambda_conn_toyclient.CONNECTION.close = lambda conn: None
    try:
        handler({}, None)
    finally:
        lambda_conn_toyclient.CONNECTION.close = close
    kept.pop().close()

    # alive: a kept connection the server hung up on is replaced; a healthy one is reused
    from tests.servers.silent import SilentTCPServer
    with SilentTCPServer() as server:
        import toyclient
        db = reused_connection(lambda: toyclient.connect(server.host, server.port))

        @managed_connection
        def reusing(event, context):
            conn = db()
            conn.send(b"ping")
            return conn

        first = reusing({}, None)
        same = reusing({}, None) is first
        server.wait_open(1)  # accepted by the server thread: there is one to drop
        server.drop_connections()
        server.wait_open(0)
        replaced = reusing({}, None) is not first
        server.wait_open(1)  # the replacement, once the server thread has accepted it
        reuse = {"same_when_healthy": same, "replaced_when_dropped": replaced,
                 "accepted": server.accepted}
        db._conn.close()

    print(json.dumps({
        "loaded_before_import": loaded_before,
        "closed": kept[0].closed,
        "leaked": leaks,
        "reuse": reuse,
        "metadata_machinery": "importlib.metadata" in sys.modules,
        "clients": list(lambda_conn.CLIENTS),
    }))
"""


def test_an_installed_plugin_tracks_its_client_and_loads_only_with_it(
    plugin_site: Path, silent_server: SilentTCPServer
) -> None:
    out = run_with(plugin_site, PLUGIN_STORY, str(silent_server.port))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["closed"] is True
    assert silent_server.wait_open(0) == 0  # the server saw the connection end
    assert silent_server.accepted == 2
    (leak,) = result["leaked"]
    assert leak["kind"] == "toyclient.Connection"
    assert leak["remote"] == [f"127.0.0.1:{silent_server.port}"]
    assert result["reuse"] == {
        "same_when_healthy": True,
        "replaced_when_dropped": True,
        "accepted": 2,
    }
    assert result["loaded_before_import"] is False  # decorating did not load the plugin
    assert result["metadata_machinery"] is False
    assert "toyclient" in result["clients"]


def test_the_plugin_docs_show_the_tested_example() -> None:
    """docs/plugins.md's code is examples/plugin/lambda_conn_toyclient.py below its
    docstring, so the code a reader copies is the code the tests above run."""
    page = (ROOT / "docs" / "plugins.md").read_text()
    pieces = page[page.index("## The pieces") :]
    block = pieces[pieces.index("```python\n") + len("```python\n") :]
    block = block[: block.index("```\n")]
    example = (EXAMPLE / "lambda_conn_toyclient.py").read_text()
    future = "from __future__ import annotations\n\n"
    assert block == example[example.index(future) + len(future) :]


def test_a_plugin_named_in_clients_is_accepted_and_an_unknown_name_lists_it(
    plugin_site: Path,
) -> None:
    code = """
        import json
        from lambda_conn import ConfigurationError, managed_connection
        managed_connection(clients=["toyclient", "pymysql"])
        try:
            managed_connection(clients=["toy"])
        except ConfigurationError as exc:
            print(json.dumps(str(exc)))
    """
    out = run_with(plugin_site, code)
    assert out.returncode == 0, out.stderr
    message = json.loads(out.stdout)
    assert message.startswith("clients=") and "is not valid" in message
    assert "toyclient" in message and "pymysql" in message


BROKEN_ON_IMPORT = "raise RuntimeError('plugin bug')\n"
BROKEN_PATCH = """
from lambda_conn import Integration

def _patch(module):
    raise RuntimeError("patch bug")

INTEGRATION = Integration("toyclient", hooks={"toyclient": _patch})
"""


@pytest.mark.parametrize(
    ("entry_value", "source"),
    [
        ("lambda_conn_broken:INTEGRATION", BROKEN_ON_IMPORT),
        ("lambda_conn_toyclient:CONNECTION", BROKEN_ON_IMPORT),
        ("lambda_conn_broken:INTEGRATION", BROKEN_PATCH),
    ],
    ids=["raises-on-import", "not-an-integration", "patch-raises"],
)
def test_a_plugin_that_fails_to_load_is_logged_and_never_breaks_the_import(
    tmp_path: Path, silent_server: SilentTCPServer, entry_value: str, source: str
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    for name in ("toyclient.py", "lambda_conn_toyclient.py"):
        shutil.copy(EXAMPLE / name, site / name)
    (site / "lambda_conn_broken.py").write_text(source)
    _dist_info(site, "lambda_conn_broken", f"[lambda_conn.clients]\ntoyclient = {entry_value}\n")
    code = """
        import json, logging, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
        from lambda_conn import managed_connection

        @managed_connection
        def handler(event, context):
            import toyclient  # the user's import must still work
            conn = toyclient.connect("127.0.0.1", int(sys.argv[1]))
            conn.close()
            return "ok"

        print(json.dumps(handler({}, None)))
    """
    out = run_with(site, code, str(silent_server.port))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == "ok"
    (line,) = [json.loads(x) for x in out.stderr.splitlines() if "tracking_unavailable" in x]
    assert line["plugin"] == "lambda_conn_broken"
    assert line["module"] == "toyclient"
    if source is BROKEN_PATCH:  # loaded: its patch raised on the user's import
        assert line["client"] == "toyclient"
        assert "patch bug" in line["error"]
    else:
        assert line["entry_point"] == entry_value


def test_a_registered_client_whose_patch_raises_is_logged_by_name(tmp_path: Path) -> None:
    """register_client() has no distribution: the log names the module that defines it."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(EXAMPLE / "toyclient.py", site / "toyclient.py")
    (site / "my_toy_plugin.py").write_text(BROKEN_PATCH)
    code = """
        import json, logging, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
        import my_toy_plugin
        from lambda_conn import managed_connection, register_client

        @managed_connection
        def handler(event, context):
            import toyclient  # patched now: the patch raises, the import must not
            return toyclient.__name__

        register_client(my_toy_plugin.INTEGRATION)
        print(json.dumps(handler({}, None)))
    """
    out = run_with(site, code)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == "toyclient"
    (line,) = [json.loads(x) for x in out.stderr.splitlines() if "tracking_unavailable" in x]
    assert line["plugin"] == "my_toy_plugin"
    assert line["client"] == "toyclient" and line["module"] == "toyclient"
    assert "patch bug" in line["error"]


def test_register_client_at_run_time_tracks_without_an_entry_point(
    silent_server: SilentTCPServer,
) -> None:
    code = """
        import json, sys
        sys.path.insert(0, sys.argv[2])
        import toyclient  # imported before the plugin registers: patched at once
        import lambda_conn_toyclient
        from lambda_conn import managed_connection, register_client
        register_client(lambda_conn_toyclient.INTEGRATION)
        kept = []

        @managed_connection(clients=["toyclient"])
        def handler(event, context):
            kept.append(toyclient.connect("127.0.0.1", int(sys.argv[1])))

        handler({}, None)
        print(json.dumps(kept[0].closed))
    """
    out = run_with(ROOT, code, str(silent_server.port), str(EXAMPLE))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) is True
    assert silent_server.wait_open(0) == 0


def test_import_loads_no_registry_and_installing_adds_only_lambda_conn_modules() -> None:
    """Installing tracking (what decorating does) and naming clients reads no metadata,
    imports no client, no wrapt, no typing: only lambda_conn's own modules.

    ``-I -S`` as in test_cold_start: nothing of this machine's site has imported them first.
    """
    code = f"""
        import json, sys
        sys.path[:0] = [{str(ROOT)!r}]
        import lambda_conn
        after_import = set(sys.modules)
        from lambda_conn import _tracking
        _tracking.install()
        from lambda_conn._registry import parse_clients
        parse_clients(["pymysql", "httpx"])
        added = set(sys.modules) - after_import
        print(json.dumps({{
            "registry_at_import": sorted(m for m in after_import if "_integrations" in m
                                         or m == "lambda_conn._registry"),
            "added_outside_lambda_conn": sorted(m for m in added if "lambda_conn" not in m),
            "integrations_loaded": "lambda_conn._integrations._pymysql" in added,
        }}))
    """
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == {
        "registry_at_import": [],
        "added_outside_lambda_conn": [],  # no client, wrapt, typing, importlib.metadata
        "integrations_loaded": True,
    }
