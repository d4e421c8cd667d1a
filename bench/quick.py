import asyncio, sys
from bench.ledger import run
from bench.stats import LATENCY_HEADER
rows = asyncio.run(run(sys.argv[1], rounds=3000, throughput_seconds=2))
print(LATENCY_HEADER)
for r in rows: print(r.row())
