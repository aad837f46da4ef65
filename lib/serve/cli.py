"""``python -m lib serve RECIPE [--quant Q4_K_M] [--port 8080]``: the recipe's exported GGUF behind an
OpenAI-compatible chat endpoint, with the recipe's template variables and evaluation sampling as defaults.

Usage: ``serve_cli.add_arguments(subparser)``, then ``serve_cli.run(args)`` (exit status).
"""
from __future__ import annotations

import argparse
import errno
import json
import signal
import sys
from pathlib import Path

from gguf import GGUFReader

from lib.export.gguf import gguf_name
from lib.paths import gguf_dir, run_dir
from lib.recipe import ParamsError, default_quant, load_recipe
from lib.serve.server import ChatModel, bind, serve

SETUP_ERROR = 2


class ServeError(Exception):
    """What keeps the server from starting: one line for the user, exit 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", default="",
                        help="the recipe whose exported file to serve (runs/RECIPE/04_merge_export/gguf/), its "
                             "template variables and sampling; optional with --gguf")
    parser.add_argument("--quant", default="",
                        help="which exported file (default Q4_K_M when the recipe exports it, else its last quant)")
    parser.add_argument("--gguf", type=Path, help="serve this GGUF instead of the recipe's export")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--n-ctx", type=int, default=4096,
                        help="context length in tokens (prompt + reply); 0: the model's own")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: the recipe's eval_n_threads)")
    parser.add_argument("--alias", default="", help="the model name clients see (default: the file's name)")
    parser.add_argument("--verbose", action="store_true", help="log every request")


def served_file(args: argparse.Namespace, recipe) -> Path:
    """The GGUF to serve: --gguf, else the recipe's exported file of --quant. ServeError when it is not there."""
    if args.gguf:
        if not args.gguf.is_file():
            raise ServeError(f"--gguf {args.gguf}: no such file")
        return args.gguf
    if recipe is None:
        raise ServeError("name a recipe (python -m lib recipes lists them) or a file with --gguf FILE")
    quants = recipe.gguf_files()
    quant = args.quant or default_quant(recipe)
    if quant not in quants:
        raise ServeError(f"--quant {quant}: recipe {recipe.name} exports {', '.join(quants)} (params quant_types)")
    folder = gguf_dir(run_dir(recipe.name))
    path = folder / gguf_name(recipe.name, quant)
    if not path.is_file():
        there = sorted(p.name for p in folder.glob("*.gguf")) if folder.is_dir() else []
        raise ServeError(f"{path} does not exist: export it first (python -m lib run {recipe.name} --stages 04)"
                         + (f"; exported: {', '.join(there)}" if there else ""))
    return path


def run(args: argparse.Namespace) -> int:
    try:
        recipe = load_recipe(args.recipe) if args.recipe else None
        if recipe is not None and recipe.chat_format == "plain":
            raise ServeError(f"recipe {recipe.name} trains a plain prompt format (chat_format: plain), not a chat: "
                             "serve its file with llama.cpp's completion endpoint (llama-server, /completion)")
        if args.n_ctx < 0 or args.threads < 0:
            raise ServeError("--n-ctx and --threads are counts (0: the model's own context / the recipe's threads)")
        gguf = served_file(args, recipe)
        with open(gguf, "rb") as handle:
            if handle.read(4) != b"GGUF":
                raise ServeError(f"{gguf} is not a GGUF file")
        try:
            server = bind(args.host, args.port)  # before the model loads: a busy port fails in a second
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ServeError(f"port {args.port} on {args.host} is in use: stop what listens there or pick "
                                 "another with --port") from None
            raise ServeError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
        if "tokenizer.chat_template" not in GGUFReader(gguf).fields:  # the header only: no weights are read
            server.server_close()
            raise ServeError(f"{gguf}: the GGUF has no chat template (tokenizer.chat_template): export it again "
                             "with 04, which embeds the tokenizer's")
    except (ParamsError, ServeError) as error:
        print(f"python -m lib serve: {error}", file=sys.stderr)
        return SETUP_ERROR
    # the recipe's evaluation sampling, but no fixed seed: two requests for one prompt get two samples, as from
    # llama-server (a request may send its own seed)
    sampling = {k: v for k, v in recipe.eval_sampling().items() if k != "seed"} if recipe else {}
    model = ChatModel(gguf, n_ctx=args.n_ctx, n_threads=args.threads or (recipe.eval_n_threads if recipe else 2),
                      template_kwargs=recipe.chat_template_kwargs if recipe else {}, sampling=sampling,
                      alias=args.alias or gguf.stem)
    server.verbose = args.verbose
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # SIGTERM ends like Ctrl-C: the socket is closed
    host, port = server.server_address[:2]
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(f"python -m lib serve: listening on {host}: anyone who can reach this machine can use the model (no "
              "API key, no TLS); put it behind a proxy that authenticates", file=sys.stderr)
    print(json.dumps({"serving": str(gguf), "url": f"http://{host}:{port}/v1", "model": model.alias,
                      "sampling": model.sampling, "n_ctx": model.llm.n_ctx()}), flush=True)
    try:
        serve(server, model)
    except KeyboardInterrupt:
        pass
    return 0
