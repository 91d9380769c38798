"""Before a sweep: `validate` (what a run would do, its cost, warnings),
`init` (a starter space), `weights fetch`, cost estimates and GPU packing."""
