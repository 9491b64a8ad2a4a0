"""`python -m switchboard.memory`"""

from switchboard.common.lifecycle import run
from switchboard.memory.app import serve
from switchboard.memory.settings import MemorySettings

if __name__ == "__main__":
    run(serve(MemorySettings()))
