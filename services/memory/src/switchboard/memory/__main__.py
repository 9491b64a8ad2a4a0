"""`python -m switchboard.memory`"""

import asyncio

from switchboard.memory.app import serve
from switchboard.memory.settings import MemorySettings

if __name__ == "__main__":
    asyncio.run(serve(MemorySettings()))
