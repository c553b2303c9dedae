"""An open-loop client booking at a fixed rate, in its own process.

    python -m bench.paced URL PATH CUSTOMERS_FILE RATE SECONDS OUT_FILE

Request i starts at t0 + i/RATE whether or not earlier ones were answered (like wrk2,
so a slow server is not excused by a client that waits for it). OUT_FILE gets one JSON
object: the wall-clock time each 201 arrived, by booking id, and how late the client
itself ran behind its schedule.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import aiohttp


async def run(url: str, path: str, customers: list[str], rate: float, seconds: float
              ) -> dict[str, object]:
    answered: dict[str, float] = {}
    statuses: Counter[int] = Counter()
    worst_lag = 0.0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(url, connector=connector) as session:

        async def book(token: str) -> None:
            async with session.post(
                path, json={"quantity": 1}, headers={"Authorization": f"Bearer {token}"}
            ) as answer:
                statuses[answer.status] += 1
                if answer.status == 201:
                    body = await answer.json()
                    answered[body["id"]] = time.time()

        tasks = []
        total = int(rate * seconds)
        start = time.monotonic()
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                worst_lag = max(worst_lag, -delay)
            tasks.append(asyncio.create_task(book(customers[i % len(customers)])))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
    return {
        "answered": answered,
        "statuses": {str(k): v for k, v in statuses.items()},
        "sent": total,
        "seconds": elapsed,
        "client_worst_lag_ms": worst_lag * 1000,
    }


def main(argv: list[str]) -> int:
    url, path, customers_file, rate, seconds, out = argv
    with open(customers_file) as handle:
        customers = [line.split("\t")[0] for line in handle if line.strip()]
    result = asyncio.run(run(url, path, customers, float(rate), float(seconds)))
    with open(out, "w") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
