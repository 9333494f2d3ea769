"""Load generation for `retail`: open-loop load runs, sweeps and the three-customer demo.

- `schedule`: when orders are due (rates, steps, ramps; fixed or Poisson arrivals)
- `pacer`: sends each order at its due time, never waiting for answers
- `runner`: one load run: place, retry, follow, sample `GET /capacity`
- `histogram`: log-bucketed latency histograms and percentiles
- `report`: the summary table and the JSON report
- `sweep`: goodput and p99 against offered load in every overload mode
- `demo`: Alice, Bob and Charlie against capacity 1 and capacity 3
- `plots`: PNG charts of all of the above
- `cli`: the `retail load` and `retail demo` commands
"""
