"""What the cloud cluster can hold, computed before anything is installed.

`upstream` reads the facts about the pinned upstream versions (meshlab/cluster/facts/*.yml,
each naming the repository, tag and file it was read from); `schedule` turns rendered manifests,
node sizes and the kubelet configuration into per-node budgets, also during an arm switch;
`preflight` holds the checks the experiment's first play runs (`meshlab engine preflight`).
"""
