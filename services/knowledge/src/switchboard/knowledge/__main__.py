"""`python -m switchboard.knowledge` runs the service;
`python -m switchboard.knowledge ingest PATH... --tenant-key KEY` loads files through the
gateway (see `switchboard.knowledge.cli`)."""

import asyncio
import sys

if __name__ == "__main__":
    if len(sys.argv) > 1:
        from switchboard.knowledge.cli import main

        sys.exit(main(sys.argv[1:]))
    from switchboard.knowledge.app import serve
    from switchboard.knowledge.settings import KnowledgeSettings

    asyncio.run(serve(KnowledgeSettings()))
