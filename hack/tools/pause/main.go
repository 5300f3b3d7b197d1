// Command pause is the test bed's pod sandbox image entrypoint (the bed has no
// internet, so registry.k8s.io/pause cannot be pulled): it sleeps until SIGINT
// or SIGTERM and reaps orphaned children, like the upstream pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			// PID 1 of the pod: collect zombies of processes reparented to it.
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
