"""Two sites in the local stack, each a real multi-node Slurm cluster on this one machine.

Every node of a site is its own host as far as Slurm knows: its own hostname (UTS namespace), its own
address on the site's bridge (network namespace) and its own view of the file system (mount namespace):
the site's shared file system at ``/p``, a private ``/etc/hosts``, ``/run``, ``/tmp`` and node-local
``/var/local``, and none of the Airflow host's state. ``network`` wires the namespaces, ``node`` makes
and enters them, ``site`` says what each site is and renders its Slurm configuration, ``trixie`` gives
site B its Debian trixie root. The stack's services for them are in ``stack.services.sites``.

This package imports nothing of ``stack.services``: the service layer builds on it, not the reverse.
"""
