"""AWS adapters shared by the functions: boto3 clients, the output bucket and outputs queue, events,
dead-lettering with a reason. Domain code sees only the ports these implement."""
