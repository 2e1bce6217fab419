"""Built-in components, each a supervised worker with a typed client, plus the test puppet.

registry (supervisor_tree.workers.registry:Registry, Names)    names -> worker incarnations; send/call by name
queue    (supervisor_tree.workers.queue:Queue, QueueClient)    bounded FIFO with acks and redelivery
session  (supervisor_tree.workers.session:Session, SessionClient)  sessions with a TTL
pool     (supervisor_tree.workers.pool:PoolManager, PoolClient; supervisor_tree.workers.pool_member:PoolMember)  poolboy
puppet   (supervisor_tree.workers.puppet:Puppet)               crashes, hangs or exits on command (tests)

examples/pool.toml declares all four in one tree.
"""
