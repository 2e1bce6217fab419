"""Built-in components, each a supervised worker with a typed client, plus the test puppet.

registry (workers.registry:Registry, Names)    names -> worker incarnations; send/call by name
queue    (workers.queue:Queue, QueueClient)    bounded FIFO with acks and redelivery
session  (workers.session:Session, SessionClient)  sessions with a TTL
pool     (workers.pool:PoolManager, PoolClient; workers.pool_member:PoolMember)  poolboy
puppet   (workers.puppet:Puppet)               crashes, hangs or exits on command (tests)

examples/pool.toml declares all four in one tree.
"""
