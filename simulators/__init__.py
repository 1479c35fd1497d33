"""Kitchen in a box for QA and developers: device simulators, a local broker, process control,
order load, chaos tools and scenarios. Imports :mod:`protocol` and :mod:`firmware_stubs` only."""
