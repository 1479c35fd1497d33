"""Brigade's control plane: order intake, planning, leases to kitchen agents, reconciliation, audit.

Build the HTTP application with :func:`control_plane.app.create_app`; the ``brigade`` command
(:mod:`control_plane.cli`) wraps it for operators.
"""
