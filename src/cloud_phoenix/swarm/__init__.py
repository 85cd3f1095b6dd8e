"""Docker Swarm on one machine, loopback only: a single-node swarm (`cluster`), the stack of
deploy/swarm/stack.yml (`stackfile`), its edge and replica autoscaler (`edge`, `autoscaler`,
run in the edge's container), and `scripts/swarm up|down` (`up`, `postgres`), through the
Docker Engine API (`api`).

The replicas run on the host network, each on a loopback address of its own
(127.0.1.<task slot>, all on the same port, like separate hosts); no container network and
no address outside 127.0.0.0/8 is made.
"""
