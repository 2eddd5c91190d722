"""lynx's command line: serve one service, run them all locally, build models, ingest documents."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from lynx.processes import start_service, wait_ready
from lynx.settings import default_cache_dir

SERVICES = ("tokenizer", "retriever", "decoder", "gateway")
READY_TIMEOUT_SECONDS = 300
GRACEFUL_SHUTDOWN_SECONDS = 25


def app_factory(service: str):
    """The service's create_app, imported only when that service is the one asked for."""
    module = __import__(f"lynx.{service}.app", fromlist=["create_app"])
    return module.create_app


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    app = app_factory(args.service)()
    settings = app.state.settings
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)


def run_dir() -> Path:
    return default_cache_dir() / "run"


def configured_port(service: str) -> int:
    """The port the service's settings give (LYNX_<SERVICE>_PORT or its default)."""
    from lynx.decoder.settings import DecoderSettings
    from lynx.gateway.settings import GatewaySettings
    from lynx.retriever.settings import RetrieverSettings
    from lynx.tokenizer.settings import TokenizerSettings

    settings = {"tokenizer": TokenizerSettings, "retriever": RetrieverSettings, "decoder": DecoderSettings,
                "gateway": GatewaySettings}[service]
    return settings().port


def service_environment(precision: str) -> dict[str, str]:
    from lynx.models.cache import models_dir

    models = models_dir(precision)
    return {
        **os.environ,
        "LYNX_TOKENIZER_MODEL_DIR": str(models / "decoder"),
        "LYNX_DECODER_MODEL_DIR": str(models / "decoder"),
        "LYNX_RETRIEVER_EMBEDDER_DIR": str(models / "embedder"),
    }


def up(args: argparse.Namespace) -> None:
    from lynx.gateway.settings import GatewaySettings
    from lynx.gateway.tenants import TenantRegistry
    from lynx.models.cache import build

    build(args.precision)
    ensure_index()
    down(args, quiet=True)
    run_dir().mkdir(parents=True, exist_ok=True)
    env = service_environment(args.precision)
    settings = GatewaySettings()
    services = [start_service(name, env, run_dir() / f"{name}.log", port=configured_port(name), detached=True)
                for name in SERVICES]
    (run_dir() / "pids.json").write_text(json.dumps({s.name: s.process.pid for s in services}))
    base = f"http://{settings.host}:{settings.port}"
    try:
        wait_ready(services, READY_TIMEOUT_SECONDS)
    except RuntimeError as error:
        raise SystemExit(f"{error}\nlogs are in {run_dir()}") from None
    key = TenantRegistry(settings.tenants_file).add(args.tenant)
    print(f"lynx is ready on {base} (logs: {run_dir()}; stop with: lynx down)")
    print(f"tenant '{args.tenant}' API key: {key}")
    print("try:")
    body = json.dumps({"model": settings.model_name, "temperature": 0, "max_tokens": 64,
                       "messages": [{"role": "user", "content": "How do I define a function in Python?"}]})
    print(f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' "
          f"-H 'Content-Type: application/json' -d '{body}'")


def down(args: argparse.Namespace, quiet: bool = False) -> None:
    pids_file = run_dir() / "pids.json"
    if not pids_file.exists():
        return
    for name, pid in json.loads(pids_file.read_text()).items():
        try:
            os.killpg(pid, signal.SIGTERM)
            if not quiet:
                print(f"stopped {name} (pid {pid})")
        except ProcessLookupError:
            pass
    pids_file.unlink()


def ensure_index(corpus: Path | None = None, force: bool = False) -> None:
    from lynx.models.cache import models_dir
    from lynx.retriever.index import INDEX_FILE, read_manifest
    from lynx.retriever.ingest import DEFAULT_CORPUS, current_chunking, ingest
    from lynx.retriever.settings import RetrieverSettings

    settings = RetrieverSettings()
    if (settings.index_dir / INDEX_FILE).is_file() and not force:
        if read_manifest(settings.index_dir).get("chunking") == current_chunking():
            return
        corpus = corpus or Path(read_manifest(settings.index_dir)["corpus"])
    corpus = corpus or DEFAULT_CORPUS
    if not corpus.is_dir():
        raise SystemExit(f"corpus {corpus} not found (the default is Debian's python3.11-doc: "
                         "apt-get install python3.11-doc, or pass a folder to `lynx ingest`)")
    summary = ingest(corpus, settings.index_dir, models_dir() / "embedder")
    print(json.dumps(summary), file=sys.stderr)


def models_build(args: argparse.Namespace) -> None:
    from lynx.models.cache import build

    print(build(args.precision, force=args.force))


def tenant_add(args: argparse.Namespace) -> None:
    from lynx.gateway.settings import GatewaySettings
    from lynx.gateway.tenants import TenantRegistry

    print(TenantRegistry(GatewaySettings().tenants_file).add(args.tenant))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lynx", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run one service in the foreground")
    serve_cmd.add_argument("service", choices=SERVICES)
    serve_cmd.set_defaults(run=serve)

    up_cmd = commands.add_parser("up", help="build what is missing and start all four services locally")
    up_cmd.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    up_cmd.add_argument("--tenant", default="demo")
    up_cmd.set_defaults(run=up)

    commands.add_parser("down", help="stop the services `lynx up` started").set_defaults(run=down)

    models_cmd = commands.add_parser("models", help="model builds").add_subparsers(dest="action", required=True)
    build_cmd = models_cmd.add_parser("build", help="convert the packaged weights to ONNX (cached)")
    build_cmd.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    build_cmd.add_argument("--force", action="store_true")
    build_cmd.set_defaults(run=models_build)

    ingest_cmd = commands.add_parser("ingest", help="index a folder of .txt/.md/.html files for retrieval")
    ingest_cmd.add_argument("corpus", type=Path, nargs="?", help="default: the Python tutorial (python3.11-doc)")
    ingest_cmd.add_argument("--if-missing", action="store_true", help="keep an existing index")
    ingest_cmd.set_defaults(run=lambda a: ensure_index(a.corpus, force=not a.if_missing))

    tenant_cmd = commands.add_parser("tenant", help="tenants").add_subparsers(dest="action", required=True)
    add_cmd = tenant_cmd.add_parser("add", help="create a tenant (or rotate its key); prints the key once")
    add_cmd.add_argument("tenant")
    add_cmd.set_defaults(run=tenant_add)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
