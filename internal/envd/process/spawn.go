package process

import (
	"os/exec"

	"golang.org/x/sys/unix"
)

// Spawn starts cmd, which is not one of the service's processes (envd's sudo runs commands
// this way), and reports how it ended. It goes through the service's starter, because when
// envd is PID 1 one reaper owns every wait and would otherwise steal cmd's exit status.
func (s *Service) Spawn(cmd *exec.Cmd) (<-chan SpawnExit, error) {
	exited, err := s.starter.start(cmd)
	if err != nil {
		return nil, err
	}
	out := make(chan SpawnExit, 1)
	go func() {
		st := <-exited
		out <- SpawnExit{Status: st.ws, Err: st.err}
	}()
	return out, nil
}

// SpawnExit is how a command started by Spawn ended.
type SpawnExit struct {
	Status unix.WaitStatus
	Err    error // waiting failed
}
