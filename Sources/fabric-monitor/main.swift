// fabric-monitor: supervises one workload process (logs, exit status). See FabricRuntime.
print("fabric-monitor")
