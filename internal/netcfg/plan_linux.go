package netcfg

import (
	"errors"
	"fmt"
	"net/netip"
)

// ipv6DefaultMetric is the metric the kernel gives an IPv6 route added
// without one (IP6_RT_PRIO_USER).
const ipv6DefaultMetric = 1024

// Plan is the configuration of one interface: what `avon-agent up` and the
// gateway install on their TUN device.
type Plan struct {
	// Dev names the interface; it must exist.
	Dev string
	// MTU, when not 0, is set if the interface has another.
	MTU int
	// Addrs are added in order; none may be there already.
	Addrs []netip.Prefix
	// Up sets the interface up if it is down.
	Up bool
	// Routes are added in order after the addresses and Up; an empty
	// Route.Dev means Dev, any other must equal it.
	Routes []Route
}

// StepKind says what a Step changed.
type StepKind uint8

const (
	StepMTU   StepKind = iota + 1 // MTU changed from PrevMTU to MTU
	StepAddr                      // Addr added
	StepUp                        // link set up (it was down)
	StepRoute                     // Route added
)

func (k StepKind) String() string {
	switch k {
	case StepMTU:
		return "mtu"
	case StepAddr:
		return "address"
	case StepUp:
		return "up"
	case StepRoute:
		return "route"
	}
	return fmt.Sprintf("StepKind(%d)", uint8(k))
}

// Step is one change Apply made.
type Step struct {
	Kind    StepKind
	Dev     string
	MTU     int          // StepMTU: the MTU set
	PrevMTU int          // StepMTU: the MTU before
	Addr    netip.Prefix // StepAddr
	Route   Route        // StepRoute, with the kernel's metric
}

func (s Step) String() string {
	switch s.Kind {
	case StepMTU:
		return fmt.Sprintf("mtu %s %d -> %d", s.Dev, s.PrevMTU, s.MTU)
	case StepAddr:
		return fmt.Sprintf("address %s dev %s", s.Addr, s.Dev)
	case StepUp:
		return "up " + s.Dev
	case StepRoute:
		return "route " + s.Route.String()
	}
	return s.Kind.String()
}

// Applied records the changes Apply made, in order, so that Undo removes
// exactly those. It is not safe for concurrent use.
type Applied struct {
	c     *Conn
	steps []Step
}

// Steps returns the changes still in place, in the order they were made.
func (a *Applied) Steps() []Step {
	if a == nil {
		return nil
	}
	return append([]Step(nil), a.steps...)
}

// check validates the plan as a whole, before anything is changed, and
// returns its routes with Dev filled in.
func (p Plan) check() ([]Route, error) {
	if err := checkName(p.Dev); err != nil {
		return nil, err
	}
	if p.MTU != 0 && (p.MTU < MinMTU || p.MTU > MaxMTU) {
		return nil, fmt.Errorf("mtu %d: %w", p.MTU, ErrInvalid)
	}
	seenAddr := make(map[netip.Addr]bool, len(p.Addrs))
	for _, a := range p.Addrs {
		if err := checkAddrPrefix(a); err != nil {
			return nil, err
		}
		if seenAddr[a.Addr()] {
			return nil, fmt.Errorf("address %s listed twice: %w", a.Addr(), ErrInvalid)
		}
		seenAddr[a.Addr()] = true
	}
	type routeKey struct {
		dst    netip.Prefix
		metric int
	}
	seenRoute := make(map[routeKey]bool, len(p.Routes))
	routes := make([]Route, len(p.Routes))
	for i, r := range p.Routes {
		if r.Dev == "" {
			r.Dev = p.Dev
		}
		if r.Dev != p.Dev {
			return nil, fmt.Errorf("route %s on %s in a plan for %s: %w", r.Dst, r.Dev, p.Dev, ErrInvalid)
		}
		if err := r.check(); err != nil {
			return nil, err
		}
		if r.Metric == 0 && r.Dst.Addr().Is6() {
			r.Metric = ipv6DefaultMetric // what the kernel will record; Undo deletes exactly it
		}
		k := routeKey{r.Dst, r.Metric}
		if seenRoute[k] {
			return nil, fmt.Errorf("route %s listed twice: %w", r, ErrInvalid)
		}
		seenRoute[k] = true
		routes[i] = r
	}
	return routes, nil
}

// Apply validates p, then configures the interface: MTU, addresses, up,
// routes. It returns the record of what it changed. If a step fails it
// undoes the steps before it and returns the error (joined with any error
// of the undo); an address or route already present fails with ErrExists.
func (c *Conn) Apply(p Plan) (*Applied, error) {
	routes, err := p.check()
	if err != nil {
		return nil, fmt.Errorf("apply plan: %w", err)
	}
	link, err := c.Link(p.Dev)
	if err != nil {
		return nil, fmt.Errorf("apply plan: %w", err)
	}
	a := &Applied{c: c}
	fail := func(err error) (*Applied, error) {
		if uerr := a.Undo(); uerr != nil {
			return nil, fmt.Errorf("apply plan to %s: %w", p.Dev, errors.Join(err, fmt.Errorf("roll back: %w", uerr)))
		}
		return nil, fmt.Errorf("apply plan to %s: %w", p.Dev, err)
	}
	if p.MTU != 0 && p.MTU != link.MTU {
		if err := c.SetMTU(p.Dev, p.MTU); err != nil {
			return fail(err)
		}
		a.steps = append(a.steps, Step{Kind: StepMTU, Dev: p.Dev, MTU: p.MTU, PrevMTU: link.MTU})
	}
	for _, addr := range p.Addrs {
		if err := c.AddAddr(p.Dev, addr); err != nil {
			return fail(err)
		}
		a.steps = append(a.steps, Step{Kind: StepAddr, Dev: p.Dev, Addr: addr})
	}
	if p.Up && !link.Up {
		if err := c.SetLinkUp(p.Dev, true); err != nil {
			return fail(err)
		}
		a.steps = append(a.steps, Step{Kind: StepUp, Dev: p.Dev})
	}
	for _, r := range routes {
		if err := c.AddRoute(r); err != nil {
			return fail(err)
		}
		a.steps = append(a.steps, Step{Kind: StepRoute, Dev: p.Dev, Route: r})
	}
	return a, nil
}

// Undo reverts the recorded changes in reverse order: routes and addresses
// deleted, the link set down again, the MTU set back. A change that is
// already gone (ErrNotFound: deleted by someone else, or the interface
// itself removed) counts as undone. Steps that fail otherwise stay
// recorded and the errors are returned joined, so Undo may be called
// again; once everything is undone it returns nil and does nothing more.
func (a *Applied) Undo() error {
	if a == nil {
		return nil
	}
	var errs []error
	kept := a.steps[:0:0]
	for i := len(a.steps) - 1; i >= 0; i-- {
		s := a.steps[i]
		err := a.undo(s)
		if err == nil || errors.Is(err, ErrNotFound) {
			continue
		}
		errs = append(errs, fmt.Errorf("undo %s: %w", s, err))
		kept = append(kept, s)
	}
	// kept is in reverse; restore the original order.
	for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
		kept[i], kept[j] = kept[j], kept[i]
	}
	a.steps = kept
	return errors.Join(errs...)
}

func (a *Applied) undo(s Step) error {
	switch s.Kind {
	case StepRoute:
		return a.c.DelRoute(s.Route)
	case StepAddr:
		return a.c.DelAddr(s.Dev, s.Addr)
	case StepUp:
		return a.c.SetLinkUp(s.Dev, false)
	case StepMTU:
		return a.c.setMTU(s.Dev, s.PrevMTU)
	}
	return fmt.Errorf("step kind %d: %w", s.Kind, ErrInvalid)
}
