"""Built-in components, plus the test puppet (workers.puppet:Puppet)."""
