"""`python -m switchboard.demo_orders`"""

import asyncio

from switchboard.demo_orders.app import main

if __name__ == "__main__":
    asyncio.run(main())
