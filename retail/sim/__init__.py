"""The service's capacity policy in virtual time: `retail simulate` and `retail plan`.

`engine` drives the very objects the server uses (`retail.core`: admission, capacity
policy, dispatcher, waiting line, pipeline and delay models) from a heap of events on
a virtual clock: no asyncio, no sleeping, no HTTP, no database. `theory` holds the
exact results of queueing theory the simulator is checked against and the planner
starts from; `planner` finds the least capacity that meets targets; `report` and
`plots` show a run. Imports: `retail.core`, `retail.config` and
`retail.loadgen.schedule` (arrival schedules), nothing else of the project.
"""
