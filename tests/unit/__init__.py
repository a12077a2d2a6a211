"""Fast tests of one module each, in-process (the Applier tests use a private redis-server): a file per
module, named after it."""
