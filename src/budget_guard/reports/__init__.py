"""Reports for people and scripts: ``budget-guard export`` (chargeback), ``report`` (the
monthly review, also ``kubectl llmbudget report``) and ``simulate`` (what-if).

A room above the adapters: it reads the cluster through the operator's Kubernetes
client and the statuses it writes, or the ledger through the store; the figures come
from the domain (``review``, ``forecast``, ``spend``, ``whatif``). Here is only what
is asked, where it is read from, and how it is written out.
"""
