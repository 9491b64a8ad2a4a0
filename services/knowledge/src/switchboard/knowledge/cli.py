"""Command line for a tenant's knowledge base, through the gateway's public API.

    python -m switchboard.knowledge ingest PATH... --tenant-key KEY   (files and folders)
    python -m switchboard.knowledge search "QUESTION" --tenant-key KEY
    python -m switchboard.knowledge list --tenant-key KEY
    python -m switchboard.knowledge delete DOCUMENT_ID --tenant-key KEY

`ingest` reads Markdown, text, HTML and PDF files (by suffix; folders are walked), shows a
progress bar, goes on past a file it cannot read or that the service refuses, and ends with
a summary naming each such file and why. Exit status: 0 when every file was stored, 1 when
some were not, 2 for bad arguments. The document id is the file's path relative to the
folder given (or its name), so ingesting the same folder again replaces, idempotently.
"""

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tqdm import tqdm

from switchboard.knowledge.ingest import MARKDOWN, PDF, SUFFIXES
from switchboard.v1.knowledge_pb2 import (
    DeleteDocumentRequest,
    KnowledgeDocument,
    ListDocumentsRequest,
    SearchKnowledgeRequest,
    UpsertDocumentRequest,
)
from switchboard.v1.knowledge_pb2_grpc import KnowledgeServiceStub

DEFAULT_TARGET = "127.0.0.1:15051"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_MD_TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass
class Summary:
    stored: int = 0
    unchanged: int = 0
    chunks: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def files_of(paths: Sequence[str]) -> Iterator[tuple[Path, str]]:
    """(file, document id) for every path; folders are walked in name order. Files with
    unknown suffixes inside folders are skipped; named ones are attempted (and refused)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if file.suffix.lower() in SUFFIXES:
                    yield file, file.relative_to(path).as_posix()
        else:
            yield path, path.name


def document_for(file: Path, document_id: str, source_url: str = "") -> KnowledgeDocument:
    """The document a file makes; OSError or ValueError when it cannot be read."""
    content_type = SUFFIXES.get(file.suffix.lower())
    if content_type is None:
        known = ", ".join(sorted(SUFFIXES))
        raise ValueError(f"unknown file type {file.suffix or '(none)'!r} (known: {known})")
    data = file.read_bytes()
    document = KnowledgeDocument(
        document_id=re.sub(r"[^A-Za-z0-9._:/-]", "-", document_id)[:128],
        content_type=content_type,
        source_url=source_url,
    )
    if content_type == PDF:
        document.content_bytes = data
        document.title = file.stem.replace("-", " ").replace("_", " ")
        return document
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    document.content = text
    match = (_MD_TITLE if content_type == MARKDOWN else _HTML_TITLE).search(text)
    document.title = (
        " ".join(match.group(1).split()) if match else file.stem.replace("-", " ").replace("_", " ")
    )[:300]
    return document


def _reason(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


async def ingest(
    stub: KnowledgeServiceStub,
    metadata: tuple[tuple[str, str], ...],
    paths: Sequence[str],
    timeout_s: float,
    base_url: str,
    quiet: bool,
) -> Summary:
    summary = Summary()
    files = list(files_of(paths))
    with tqdm(total=len(files), unit="file", disable=quiet, file=sys.stderr) as progress:
        for file, document_id in files:
            progress.set_postfix_str(str(file)[-40:])
            try:
                url = f"{base_url.rstrip('/')}/{document_id}" if base_url else ""
                document = document_for(file, document_id, url)
                response = await stub.UpsertDocument(
                    UpsertDocumentRequest(document=document), metadata=metadata, timeout=timeout_s
                )
            except (OSError, ValueError) as exc:
                summary.failed.append((str(file), str(exc)))
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise
                summary.failed.append((str(file), _reason(exc)))
            else:
                summary.chunks += response.chunks
                if response.unchanged:
                    summary.unchanged += 1
                else:
                    summary.stored += 1
            progress.update(1)
    return summary


def print_summary(summary: Summary) -> None:
    print(
        f"stored {summary.stored}, unchanged {summary.unchanged}, failed {len(summary.failed)} "
        f"({summary.chunks} chunks)"
    )
    for file, reason in summary.failed:
        print(f"  {file}: {reason}")


async def run(args: argparse.Namespace) -> int:
    metadata = (("authorization", f"Bearer {args.tenant_key}"),)
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    async with grpc.aio.insecure_channel(args.target, options=options) as channel:
        stub = KnowledgeServiceStub(channel)
        try:
            if args.command == "ingest":
                summary = await ingest(
                    stub, metadata, args.paths, args.timeout, args.base_url, args.quiet
                )
                print_summary(summary)
                return 1 if summary.failed else 0
            if args.command == "search":
                response = await stub.SearchKnowledge(
                    SearchKnowledgeRequest(query=args.query, top_k=args.top_k),
                    metadata=metadata,
                    timeout=args.timeout,
                )
                if not response.hits:
                    print("no passage answers this")
                for hit in response.hits:
                    print(
                        f"{hit.similarity:.3f}  {hit.document_id}  {hit.title}"
                        f"{'  > ' + hit.heading if hit.heading else ''}\n      {hit.snippet}"
                    )
                return 0
            if args.command == "list":
                token = ""
                while True:
                    page = await stub.ListDocuments(
                        ListDocumentsRequest(page_size=100, page_token=token),
                        metadata=metadata,
                        timeout=args.timeout,
                    )
                    for d in page.documents:
                        print(f"{d.document_id}\t{d.chunks} chunks\tv{d.version}\t{d.title}")
                    token = page.next_page_token
                    if not token:
                        return 0
            await stub.DeleteDocument(
                DeleteDocumentRequest(document_id=args.document_id),
                metadata=metadata,
                timeout=args.timeout,
            )
            print(f"deleted {args.document_id}")
            return 0
        except grpc.aio.AioRpcError as exc:
            print(f"error: {_reason(exc)}", file=sys.stderr)
            return 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m switchboard.knowledge", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--tenant-key",
            default=os.environ.get("SWITCHBOARD_DEV_API_KEY"),
            help="the tenant's API key (default: $SWITCHBOARD_DEV_API_KEY)",
        )
        p.add_argument("--target", default=DEFAULT_TARGET, help="the gateway's gRPC address")
        p.add_argument("--timeout", type=float, default=120.0, help="seconds per call")

    ingest_p = commands.add_parser("ingest", help="load files and folders")
    ingest_p.add_argument("paths", nargs="+", metavar="PATH")
    ingest_p.add_argument(
        "--base-url", default="", help="source URL prefix; the document id is appended"
    )
    ingest_p.add_argument("--quiet", action="store_true", help="no progress bar")
    common(ingest_p)
    search_p = commands.add_parser("search", help="search the knowledge base")
    search_p.add_argument("query")
    search_p.add_argument("--top-k", type=int, default=3)
    common(search_p)
    list_p = commands.add_parser("list", help="list the documents")
    common(list_p)
    delete_p = commands.add_parser("delete", help="delete a document")
    delete_p.add_argument("document_id")
    common(delete_p)
    return top


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if not args.tenant_key:
        print("error: --tenant-key is required (or set SWITCHBOARD_DEV_API_KEY)", file=sys.stderr)
        return 2
    return asyncio.run(run(args))
