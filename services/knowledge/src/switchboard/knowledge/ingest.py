"""From a document to chunks: text extraction per content type, then chunking that keeps
headings and paragraphs together, with overlap between neighbouring chunks.

Everything here is pure (no I/O) and raises `DocumentError` with a message meant for the
caller when the input cannot be used.
"""

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser

PLAIN = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
CONTENT_TYPES = (PLAIN, MARKDOWN, HTML, PDF)
# What a file's suffix says its content type is (the CLI's guess).
SUFFIXES = {
    ".txt": PLAIN,
    ".text": PLAIN,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".pdf": PDF,
}
_ALIASES = {"text/x-markdown": MARKDOWN, "application/xhtml+xml": HTML, "": PLAIN}

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^(=+|-+)\s*$")
_FENCE = re.compile(r"^(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_HTML_BLOCKS = ("h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "blockquote", "td", "th")
_HTML_BLOCK_SET = frozenset((*_HTML_BLOCKS, "dt", "dd", "figcaption", "caption"))
_HTML_DROP = ("script", "style", "noscript", "template", "nav", "header", "footer", "svg")


class DocumentError(ValueError):
    """The document cannot be ingested; the message says why."""


@dataclass
class Section:
    """A run of paragraphs under one heading path."""

    headings: list[str]
    paragraphs: list[str] = field(default_factory=list)

    @property
    def heading(self) -> str:
        return " > ".join(h for h in self.headings if h)


@dataclass(frozen=True)
class Chunk:
    """One retrievable passage."""

    ordinal: int
    heading: str
    text: str


def normalise_content_type(content_type: str) -> str:
    """The canonical content type, or DocumentError naming the accepted ones."""
    value = content_type.split(";", 1)[0].strip().lower()
    value = _ALIASES.get(value, value)
    if value not in CONTENT_TYPES:
        accepted = ", ".join(CONTENT_TYPES)
        raise DocumentError(f"content_type {content_type!r} is not supported (use {accepted})")
    return value


def extract(content_type: str, text: str, data: bytes) -> list[Section]:
    """The document's sections; DocumentError when it has no readable text."""
    if content_type == PDF:
        if text:
            raise DocumentError("a PDF goes in content_bytes, with content empty")
        sections = _pdf_sections(data)
    else:
        if data:
            if text:
                raise DocumentError("set content or content_bytes, not both")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DocumentError(f"content_bytes is not UTF-8 text ({exc.reason})") from exc
        if content_type == MARKDOWN:
            sections = _markdown_sections(text)
        elif content_type == HTML:
            sections = _html_sections(text)
        else:
            sections = [Section([""], _paragraphs(text))]
    sections = [s for s in sections if s.paragraphs]
    if not sections:
        raise DocumentError("the document has no text")
    return sections


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, whitespace folded."""
    return [p for block in re.split(r"\n\s*\n", text) if (p := " ".join(block.split()))]


def _markdown_sections(text: str) -> list[Section]:
    """ATX (`# Title`) and setext headings open sections; fenced code stays one paragraph.
    Line-based rather than a full CommonMark parse: only headings and paragraph breaks matter
    for chunking, and the text keeps its Markdown (lists, emphasis), which reads fine."""
    sections = [Section([])]
    lines = text.splitlines()
    block: list[str] = []
    in_fence = False

    def flush() -> None:
        if paragraph := " ".join(" ".join(block).split()):
            sections[-1].paragraphs.append(paragraph)
        block.clear()

    def open_section(level: int, title: str) -> None:
        flush()
        parent = sections[-1].headings[: level - 1]
        parent += [""] * (level - 1 - len(parent))
        sections.append(Section([*parent, title.strip()]))

    for i, line in enumerate(lines):
        if _FENCE.match(line.strip()):
            in_fence = not in_fence
            block.append(line)
            continue
        if in_fence:
            block.append(line)
            continue
        heading = _HEADING.match(line)
        if heading:
            open_section(len(heading.group(1)), heading.group(2))
        elif _SETEXT.match(line) and block and i > 0 and lines[i - 1].strip() and len(block) == 1:
            title = block.pop()
            open_section(1 if line.strip().startswith("=") else 2, title)
        elif not line.strip():
            flush()
        else:
            block.append(line)
    flush()
    return sections


def _html_sections(text: str) -> list[Section]:
    tree = LexborHTMLParser(text)
    for tag in _HTML_DROP:
        for node in tree.css(tag):
            node.decompose()
    root = tree.body or tree.root
    sections = [Section([])]
    if root is None:
        return sections
    title_node = tree.css_first("title")
    for node in root.css(",".join(sorted(_HTML_BLOCK_SET))):
        # A block inside another block (a <p> in an <li>) is read with its outer block.
        parent = node.parent
        nested = False
        while parent is not None:
            if parent.tag in _HTML_BLOCK_SET:
                nested = True
                break
            parent = parent.parent
        if nested:
            continue
        content = " ".join(node.text(separator=" ").split())
        if not content:
            continue
        if node.tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            level = int(node.tag[1])
            parent_headings = sections[-1].headings[: level - 1]
            parent_headings += [""] * (level - 1 - len(parent_headings))
            sections.append(Section([*parent_headings, content]))
        else:
            sections[-1].paragraphs.append(content)
    if not any(s.paragraphs for s in sections) and root is not None:
        # No block elements (a bare text page): its text, by blank lines.
        sections = [Section([], _paragraphs(root.text(separator="\n")))]
    if title_node is not None and not sections[0].headings:
        sections[0].headings = [" ".join(title_node.text().split())]
    return sections


def _pdf_sections(data: bytes) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if not data:
        raise DocumentError("the PDF is empty (content_bytes has no data)")
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise DocumentError("content_bytes is not a PDF (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise DocumentError("the PDF is encrypted")
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            sections.append(Section([f"Page {number}"], _paragraphs(page.extract_text() or "")))
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise DocumentError(f"the PDF cannot be read: {exc}") from exc
    return sections


def _sentences(paragraph: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(paragraph) if s]


def _pieces(paragraph: str, max_words: int) -> Iterator[list[str]]:
    """A paragraph as word lists of at most `max_words`, cut at sentence ends if possible."""
    words = paragraph.split()
    if len(words) <= max_words:
        yield words
        return
    current: list[str] = []
    for sentence in _sentences(paragraph):
        sentence_words = sentence.split()
        while len(sentence_words) > max_words:  # one very long sentence
            if current:
                yield current
                current = []
            yield sentence_words[:max_words]
            sentence_words = sentence_words[max_words:]
        if current and len(current) + len(sentence_words) > max_words:
            yield current
            current = []
        current.extend(sentence_words)
    if current:
        yield current


def chunk_sections(sections: list[Section], max_words: int, overlap_words: int) -> list[Chunk]:
    """Chunks of at most `max_words` words (plus the overlap): paragraphs of one section are
    packed together, a chunk never spans two sections, and each chunk after the first of a
    section starts with the last `overlap_words` words of the one before it."""
    if max_words <= 0 or overlap_words < 0 or overlap_words >= max_words:
        raise ValueError("need 0 <= overlap_words < max_words")
    chunks: list[Chunk] = []
    for section in sections:
        current: list[str] = []
        tail: list[str] = []
        for paragraph in section.paragraphs:
            for piece in _pieces(paragraph, max_words):
                if current and len(current) + len(piece) > max_words:
                    chunks.append(Chunk(len(chunks), section.heading, " ".join([*tail, *current])))
                    tail = current[-overlap_words:] if overlap_words else []
                    current = []
                current.extend(piece)
        if current:
            chunks.append(Chunk(len(chunks), section.heading, " ".join([*tail, *current])))
    return chunks
